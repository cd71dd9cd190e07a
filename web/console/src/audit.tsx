/** Audit: every state change the daemon appended (who, when, through what, before and after), newest first, paged. */
import { useEffect, useState } from "preact/hooks";
import { api, type AuditPage as Page } from "./api.js";
import { errorText, timeText } from "./format.js";

const PAGE = 50;

function value(v: unknown): string {
  return v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v);
}

export function AuditPage() {
  /** Cursors of the pages shown so far: the last is the current page's (undefined: the newest). */
  const [cursors, setCursors] = useState<(number | undefined)[]>([undefined]);
  const [page, setPage] = useState<Page | string>("…");
  const cursor = cursors.at(-1);
  useEffect(() => {
    api
      .audit({ limit: PAGE, ...(cursor !== undefined ? { cursor } : {}) })
      .then(setPage, (err: unknown) => setPage(errorText(err)));
  }, [cursor]);
  return (
    <section class="page" id="audit">
      <h2>Audit log</h2>
      {typeof page === "string" ? (
        <p class={page === "…" ? "dim" : "message error"}>{page}</p>
      ) : (
        <>
          {page.entries.length === 0 && <p class="dim">no changes recorded</p>}
          <ol class="audit">
            {page.entries.map((e, i) => (
              <li key={`${e.ts}-${i}`} class={e.outcome === "refused" ? "refused" : ""}>
                <span class="dim">{timeText(e.ts)}</span> <strong>{e.action}</strong>
                {e.camera !== undefined && ` ${e.camera}`}
                {e.target !== undefined && ` ${e.target}`} by {e.user ?? "the daemon"} via {e.via}
                {(e.before !== undefined || e.after !== undefined) &&
                  `: ${value(e.before)} → ${value(e.after)}`}
                {e.outcome === "refused" && ` (refused${e.detail ? `: ${e.detail}` : ""})`}
              </li>
            ))}
          </ol>
        </>
      )}
      <div class="row">
        <button
          type="button"
          disabled={cursors.length === 1}
          onClick={() => setCursors((c) => c.slice(0, -1))}
        >
          Newer
        </button>
        <button
          type="button"
          id="audit-older"
          disabled={typeof page === "string" || page.next_cursor === null}
          onClick={() =>
            typeof page !== "string" &&
            page.next_cursor !== null &&
            setCursors((c) => [...c, page.next_cursor!])
          }
        >
          Older
        </button>
      </div>
    </section>
  );
}
