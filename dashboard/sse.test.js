// node --test dashboard/: the Server-Sent Events parser.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SseParser } from './sse.js';

function parse(chunks, lastEventId) {
  const got = [];
  const p = new SseParser((m) => got.push(m), lastEventId);
  for (const c of chunks) p.push(c);
  return { got, p };
}

test('events end with a blank line; data lines join with newlines', () => {
  const { got, p } = parse(['id: 7\ndata: {"id":7}\n\n: keep-alive\n\nid:8\ndata:a\ndata: b\n\n']);
  assert.deepEqual(got, [
    { data: '{"id":7}', event: 'message', id: '7' },
    { data: 'a\nb', event: 'message', id: '8' },
  ]);
  assert.equal(p.lastEventId, '8');
});

test('any split of the stream gives the same events, CRLF and CR included', () => {
  const text = 'id: 1\r\ndata: one\r\n\r\nid: 2\rdata: two\r\revent: x\ndata: three\n\n';
  const whole = parse([text]).got;
  assert.deepEqual(whole.map((m) => [m.id, m.event, m.data]),
    [['1', 'message', 'one'], ['2', 'message', 'two'], ['2', 'x', 'three']]);
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= text.length; j += 7) {
      const { got } = parse([text.slice(0, i), text.slice(i, j), text.slice(j)]);
      assert.deepEqual(got, whole, `split at ${i} and ${j}`);
    }
  }
});

test('the last id carries over to the next connection and across events without one', () => {
  const { got, p } = parse(['data: x\n\n'], '41');
  assert.deepEqual(got, [{ data: 'x', event: 'message', id: '41' }]);
  p.push('id: 42\n\n'); // an id alone dispatches nothing but is kept
  assert.equal(got.length, 1);
  assert.equal(p.lastEventId, '42');
  p.push('id: bad\0id\ndata: y\n\n'); // an id with NUL is ignored
  assert.equal(got[1].id, '42');
});

test('comments, unknown fields and a field without a colon', () => {
  const { got } = parse([':hello\nretry: 100\nfoo: bar\ndata\ndata:  two spaces\n\n']);
  assert.deepEqual(got, [{ data: '\n two spaces', event: 'message', id: '' }]);
});

test('an event cut off by the end of the stream is dropped; a final CR still ends a line', () => {
  const cut = parse(['data: whole\n\ndata: cut']);
  cut.p.end();
  assert.deepEqual(cut.got.map((m) => m.data), ['whole']);
  const cr = parse(['data: last\r\r']);
  assert.equal(cr.got.length, 0, 'the final CR may be half a CRLF');
  cr.p.end();
  assert.deepEqual(cr.got.map((m) => m.data), ['last']);
});
