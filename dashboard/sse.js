// A Server-Sent Events parser (the WHATWG "event stream interpretation"),
// fed with text as it arrives. The dashboard reads the stream with fetch
// rather than EventSource so that it can send the Authorization header, so
// it parses the stream itself. Pure: tested by sse.test.js.
//
// Lines end with CRLF, LF or CR; "field: value" lines build an event, a
// blank line dispatches it (when it has data), ":" lines are comments
// (the server's keep-alives). The last "id:" seen is kept across events and
// reconnections: it is what the client sends back as Last-Event-ID.

export class SseParser {
  /** onMessage({data, event, id}) is called once per dispatched event. */
  constructor(onMessage, lastEventId = '') {
    this.onMessage = onMessage;
    this.lastEventId = lastEventId;
    this.buf = '';
    this.data = [];
    this.event = '';
  }

  /** Feeds the next piece of the stream (any split, even inside a CRLF). */
  push(text) {
    this.buf += text;
    for (;;) {
      const nl = this.buf.search(/[\r\n]/);
      if (nl < 0) return;
      // A CR at the very end may be the first half of a CRLF.
      if (this.buf[nl] === '\r' && nl === this.buf.length - 1) return;
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + (this.buf[nl] === '\r' && this.buf[nl + 1] === '\n' ? 2 : 1));
      this.line(line);
    }
  }

  /** The stream ended: an event without its blank line is dropped (as the spec says). */
  end() {
    if (this.buf.endsWith('\r')) this.line(this.buf.slice(0, -1));
    this.buf = '';
    this.data = [];
    this.event = '';
  }

  line(line) {
    if (line === '') {
      if (this.data.length) {
        this.onMessage({ data: this.data.join('\n'), event: this.event || 'message', id: this.lastEventId });
      }
      this.data = [];
      this.event = '';
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data': this.data.push(value); break;
      case 'event': this.event = value; break;
      case 'id': if (!value.includes('\0')) this.lastEventId = value; break;
      default: break; // "retry" and unknown fields: the client sets its own backoff
    }
  }
}
