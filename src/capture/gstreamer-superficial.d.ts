/**
 * The part of gstreamer-superficial (a CommonJS native addon without its own types) that capture uses.
 * Shapes follow the addon's C++ (Pipeline.cpp, GObjectWrap.cpp, GLibHelpers.cpp of 1.7.x).
 */
declare module "gstreamer-superficial" {
  namespace gstreamer {
    /** A bus message: `type` is GStreamer's message type name ("error", "eos", "warning", "state-changed", …). */
    interface BusMessage {
      type: string;
      /** Name of the posting object (element or pad). */
      _src_element_name?: string;
      /** For "error": the posting element's path, e.g. `/GstPipeline:pipeline3/GstV4l2Src:v4l2src0`. */
      name?: string;
      /** For "error": the GError text. */
      message?: string;
      /** For "error" and "warning": GStreamer's debug detail (source file, function, reason). */
      debug?: string;
      // Every other field of the message's GstStructure lands here with a type only known at run time.
      [field: string]: unknown;
    }

    /** The first structure of a sample's caps, e.g. `{ name: "video/x-raw", format: "RGB", width: 64, … }`. */
    interface SampleCaps {
      name?: string;
      format?: string;
      width?: number;
      height?: number;
      [field: string]: unknown;
    }

    /**
     * Called once per pull: `buf` is a fresh copy of the sample's bytes, or null when the appsink has nothing more
     * to give (end of stream, flushing because the pipeline went to NULL, or the sink never started).
     */
    type PullCallback = (buf: Buffer | null, caps: SampleCaps) => void;

    /** An element from `findChild`: its GObject properties are readable/writable by name; appsinks add `pull`. */
    interface Element {
      /** Only present on appsinks: queues one blocking pull on libuv's thread pool. */
      pull?: (callback: PullCallback) => void;
      [property: string]: unknown;
    }

    class Pipeline {
      /** Runs gst_parse_launch; throws an Error with GStreamer's parse error text (and prints it to stderr). */
      constructor(description: string);
      play(): void;
      pause(): void;
      /** Sets the pipeline to NULL synchronously; pending pulls then return null. */
      stop(): void;
      findChild(name: string): Element | undefined;
      /**
       * Pops bus messages one at a time on libuv's thread pool (blocking) and calls back on the main thread; stops
       * re-polling after a callback that finds the pipeline in NULL.
       */
      pollBus(callback: (message: BusMessage) => void): void;
      /** When true (GStreamer's default) the bus drops its queued messages as the pipeline reaches NULL. */
      "auto-flush-bus": boolean;
    }
  }

  export = gstreamer;
}
