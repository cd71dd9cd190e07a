/**
 * The console's shell: the header (node state, stream, login), the navigation between pages (hash routes, so a
 * reload or a shared link opens the same page), the command log, and the state every page shares.
 */
import "./style.css";
import { render } from "preact";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, api, type ConsoleResultEvent, type ConsoleStatus, type SessionInfo } from "./api.js";
import { AuditPage } from "./audit.js";
import { errorText, fmt } from "./format.js";
import { HistoryPage } from "./history.js";
import { LivePage } from "./live.js";
import { ModelsPage } from "./models.js";
import { PartPage } from "./part.js";
import { QueuePage } from "./queue.js";
import { type LogLine, ResultBus, type Shared, SharedContext, type StreamState } from "./shared.js";

/** Lines kept in the command log. */
const LOG_LINES = 50;
const STATUS_EVERY_MS = 2000;

type Route =
  | { page: "live" }
  | { page: "queue" }
  | { page: "part"; id: number }
  | { page: "history" }
  | { page: "models" }
  | { page: "audit" };

function routeOf(hash: string): Route {
  const part = /^#\/part\/([0-9]+)$/.exec(hash);
  if (part) return { page: "part", id: Number(part[1]) };
  if (hash === "#/queue") return { page: "queue" };
  if (hash === "#/history") return { page: "history" };
  if (hash === "#/models") return { page: "models" };
  if (hash === "#/audit") return { page: "audit" };
  return { page: "live" };
}

const NAV: { hash: string; page: Route["page"]; label: string }[] = [
  { hash: "#/", page: "live", label: "Live" },
  { hash: "#/queue", page: "queue", label: "Review queue" },
  { hash: "#/history", page: "history", label: "History" },
  { hash: "#/models", page: "models", label: "Models" },
  { hash: "#/audit", page: "audit", label: "Audit" },
];

function useRoute(): Route {
  const [route, setRoute] = useState(() => routeOf(location.hash));
  useEffect(() => {
    const onHash = () => setRoute(routeOf(location.hash));
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  return route;
}

function Login({ shared }: { shared: Shared }) {
  const [user, setUser] = useState("");
  const [password, setPassword] = useState("");
  const { session, status } = shared;
  if (session !== null) {
    const logout = async () => {
      await api.logout().catch((err: unknown) => shared.log(`log out: ${errorText(err)}`, false));
      shared.setSession(null);
      shared.log(`${session.user} logged out`, true);
    };
    return (
      <div class="login">
        <span id="who">operator {session.user}</span>
        <button id="logout" type="button" onClick={logout}>
          Log out
        </button>
      </div>
    );
  }
  if (status !== null && !status.console.operators) return <span class="dim">read-only</span>;
  const submit = async (event: Event) => {
    event.preventDefault();
    try {
      const info = await api.login(user, password);
      setPassword("");
      shared.setSession(info);
      shared.log(`logged in as ${info.user}`, true);
    } catch (err) {
      shared.log(`login as ${user} refused: ${errorText(err)}`, false);
    }
  };
  return (
    <form id="login" class="login" autocomplete="on" onSubmit={submit}>
      <input
        id="user"
        name="username"
        placeholder="operator"
        autocomplete="username"
        size={10}
        value={user}
        onInput={(e) => setUser(e.currentTarget.value)}
      />
      <input
        id="password"
        name="password"
        type="password"
        placeholder="password"
        autocomplete="current-password"
        size={10}
        value={password}
        onInput={(e) => setPassword(e.currentTarget.value)}
      />
      <button id="login-button" type="submit">
        Log in
      </button>
    </form>
  );
}

function Header({ shared, route }: { shared: Shared; route: Route }) {
  const s = shared.status;
  const outbox = s?.outbox;
  return (
    <header>
      <h1>stpmd</h1>
      <span id="ready" class={`badge ${s === null ? "" : s.ready ? "ok" : "bad"}`}>
        {s === null ? "…" : s.ready ? "ready" : "not ready"}
      </span>
      <span id="node" class="dim">
        {s === null || outbox === undefined
          ? ""
          : `${fmt(s.fps, 3)} fps · ${s.inspected} inspected · up ${Math.round(s.uptime_s)} s · outbox ${outbox.queued}` +
            (outbox.lost + outbox.overflowed > 0
              ? ` (lost ${outbox.lost}, refused ${outbox.overflowed})`
              : "")}
      </span>
      <span class="spacer" />
      <span
        id="stream"
        class={`badge ${shared.stream === "live" ? "ok" : shared.stream === "reconnecting" ? "warn" : ""}`}
      >
        {shared.stream}
      </span>
      <Login shared={shared} />
      <nav>
        {NAV.map((item) => (
          <a
            key={item.page}
            href={item.hash}
            id={`nav-${item.page}`}
            class={route.page === item.page ? "current" : ""}
          >
            {item.label}
          </a>
        ))}
      </nav>
    </header>
  );
}

function App() {
  const route = useRoute();
  const [status, setStatus] = useState<ConsoleStatus | null>(null);
  const [session, setSession] = useState<SessionInfo | null>(null);
  const [stream, setStream] = useState<StreamState>("connecting");
  const [lines, setLines] = useState<LogLine[]>([]);
  const bus = useRef(new ResultBus()).current;

  const log = useCallback((text: string, ok: boolean) => {
    setLines((old) => [{ at: new Date().toLocaleTimeString(), text, ok }, ...old].slice(0, LOG_LINES));
  }, []);

  const refreshStatus = useCallback(async () => {
    try {
      setStatus(await api.status());
    } catch {
      // the daemon restarts; the next poll tries again
    }
  }, []);

  useEffect(() => {
    void refreshStatus();
    const timer = setInterval(refreshStatus, STATUS_EVERY_MS);
    // a reload keeps the login: the cookie is the browser's, the CSRF token comes back from the server
    api.session().then(
      (info) => setSession(info ?? null),
      () => undefined,
    );
    const events = new EventSource("/api/events");
    events.onopen = () => setStream("live");
    events.onerror = () => setStream("reconnecting");
    events.addEventListener("result", (e) => bus.emit(JSON.parse((e as MessageEvent<string>).data)));
    events.addEventListener("gap", (e) => {
      const { missed } = JSON.parse((e as MessageEvent<string>).data) as { missed: number };
      log(`missed ${missed} results (slow connection)`, false);
    });
    return () => {
      clearInterval(timer);
      events.close();
    };
  }, [bus, log, refreshStatus]);

  const onResult = useCallback(
    (listener: (event: ConsoleResultEvent) => void) => bus.subscribe(listener),
    [bus],
  );

  const command = useCallback(
    async (name: string, body: Record<string, unknown>): Promise<string | undefined> => {
      if (session === null) {
        log(`${name}: log in first`, false);
        return "log in first";
      }
      let refused: string | undefined;
      try {
        const response = await api.command(name, body);
        if (response.status === "ok")
          log(`${name} ${JSON.stringify(body)} → ok ${JSON.stringify(response.data)}`, true);
        else {
          refused = response.error;
          log(`${name} ${JSON.stringify(body)} → ${response.error}`, false);
        }
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) setSession(null);
        refused = errorText(err);
        log(`${name}: ${refused}`, false);
      }
      await refreshStatus();
      return refused;
    },
    [session, log, refreshStatus],
  );

  const shared: Shared = useMemo(
    () => ({
      status,
      refreshStatus,
      session,
      setSession,
      stream,
      onResult,
      log,
      command,
    }),
    [status, refreshStatus, session, stream, onResult, log, command],
  );

  return (
    <SharedContext.Provider value={shared}>
      <Header shared={shared} route={route} />
      <main>
        {route.page === "live" && <LivePage />}
        {route.page === "queue" && <QueuePage />}
        {route.page === "part" && <PartPage key={route.id} id={route.id} />}
        {route.page === "history" && <HistoryPage />}
        {route.page === "models" && <ModelsPage />}
        {route.page === "audit" && <AuditPage />}
      </main>
      <section class="log">
        <h2>Commands</h2>
        <ol id="log" reversed>
          {lines.map((line, i) => (
            <li key={lines.length - i} class={line.ok ? "ok" : "error"}>
              {`${line.at}  ${line.text}`}
            </li>
          ))}
        </ol>
      </section>
    </SharedContext.Provider>
  );
}

render(<App />, document.getElementById("app")!);
