// A volume's replicas, changed from the page: the form that adds one (POST
// /v1/volumes/{vol}/children with its name, uri and options, given as
// key=value lines) and each replica's remove button (DELETE
// .../children/{name}, after a confirmation). Both send the page's token;
// a refusal shows the server's one-line message. A new replica syncs
// before it votes: its state says so, and the resync's progress is in the
// Jobs section. parseOptions and addBody are pure (tested by
// replicas.test.js); the rest works on the DOM.

import { AuthError, api } from './api.js';
import { h } from './dom.js';

const MSG_MS = 15000;

/**
 * "key=value" lines into {options} (values as strings, the server reads
 * them as the config's), or {error} naming the first bad line. Blank lines
 * and lines starting with # are skipped; a key given twice is an error.
 */
export function parseOptions(text) {
  const options = {};
  const lines = String(text || '').split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    const key = eq < 0 ? '' : line.slice(0, eq).trim();
    if (!key) return { error: `options, line ${i + 1}: "${line}" is not key=value` };
    if (Object.prototype.hasOwnProperty.call(options, key)) {
      return { error: `options, line ${i + 1}: ${key} is given twice` };
    }
    options[key] = line.slice(eq + 1).trim();
  }
  return { options };
}

/** The body of POST .../children from the form's fields: {body} or {error}. */
export function addBody(name, uri, optionsText) {
  const n = String(name || '').trim();
  const u = String(uri || '').trim();
  if (!n) return { error: 'the replica needs a name' };
  if (!u) return { error: 'the replica needs a uri' };
  const parsed = parseOptions(optionsText);
  if (parsed.error) return { error: parsed.error };
  return { body: { name: n, uri: u, options: parsed.options } };
}

function childrenPath(vol, name) {
  const base = `/v1/volumes/${encodeURIComponent(vol)}/children`;
  return name === undefined ? base : `${base}/${encodeURIComponent(name)}`;
}

function showMsg(rep, level, text) {
  clearTimeout(rep.msgTimer);
  rep.msg.dataset.level = level;
  rep.msg.textContent = text;
  rep.msg.hidden = false;
  rep.msgTimer = setTimeout(() => { rep.msg.hidden = true; }, MSG_MS);
}

function failure(e, what) {
  if (e instanceof AuthError) return `${what}: the server needs an API token. Enter it above and try again.`;
  return `${what}: ${e && e.message ? e.message : e}`;
}

async function addReplica(app, rep) {
  if (rep.busy) return;
  const { body, error } = addBody(rep.name.value, rep.uri.value, rep.options.value);
  if (error) {
    showMsg(rep, 'error', `Not sent: ${error}.`);
    return;
  }
  rep.busy = true;
  rep.submit.disabled = true;
  rep.submit.textContent = 'Adding\u2026';
  try {
    await api(app, childrenPath(rep.vol), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    rep.form.reset();
    showMsg(rep, 'info', `Replica ${body.name} added. It syncs before it votes: the resync in Jobs shows how far it is.`);
  } catch (e) {
    showMsg(rep, 'error', failure(e, `Could not add replica ${body.name}`));
  } finally {
    rep.busy = false;
    rep.submit.disabled = false;
    rep.submit.textContent = 'Add replica';
    app.hooks.poll();
    app.hooks.pollJobsSoon();
  }
}

/** The "add a replica" part of volume `vol`'s card: {el, msg, ...}. */
export function buildReplicas(app, vol) {
  const rep = { vol, busy: false, msgTimer: null };
  const id = (what) => `replica-${what}-${vol}`;
  rep.name = h('input', {
    id: id('name'), name: 'name', required: true, spellcheck: 'false', autocomplete: 'off', placeholder: 'a new name, e.g. d',
  });
  rep.uri = h('input', {
    id: id('uri'), name: 'uri', required: true, spellcheck: 'false', autocomplete: 'off',
    placeholder: 'a file under child_roots, s3://bucket/prefix, http://host:port/v1/volumes/name',
  });
  rep.options = h('textarea', {
    id: id('options'), name: 'options', rows: 2, spellcheck: 'false',
    placeholder: 'options, one key=value a line (e.g. endpoint=http://minio:9000)',
  });
  rep.submit = h('button', { type: 'submit', 'data-action': 'add-replica' }, 'Add replica');
  rep.msg = h('div', { class: 'replicas-msg', role: 'status', hidden: true });
  rep.form = h('form', {
    class: 'replica-form', autocomplete: 'off',
    onsubmit: (ev) => { ev.preventDefault(); addReplica(app, rep); },
  },
  h('label', { for: id('name') }, 'name'), rep.name,
  h('label', { for: id('uri') }, 'uri'), rep.uri,
  h('label', { for: id('options') }, 'options'), rep.options,
  h('span', { class: 'replica-submit' }, rep.submit));
  rep.el = h('section', { class: 'replicas', 'data-volume': vol, 'aria-label': `replicas of volume ${vol}` },
    h('details', { class: 'replica-add' },
      h('summary', null, 'Add a replica'),
      h('p', { class: 'muted replica-help' },
        'It is copied from the others before it takes part in the votes. Sent with this page\u2019s API token.'),
      rep.form),
    rep.msg);
  return rep;
}

/**
 * The remove button of replica `name` of the volume whose replicas part
 * is `rep`: asks first, then DELETE .../children/{name}.
 */
export function removeButton(app, rep, name) {
  const btn = h('button', {
    type: 'button', class: 'child-remove', 'data-action': 'remove-child', 'data-child': name,
    title: `remove replica ${name} from volume ${rep.vol}`,
    onclick: async () => {
      const ok = window.confirm(`Remove replica ${name} from volume ${rep.vol}?\n\n` +
        'The volume stops using it; its data stays where it is.');
      if (!ok) return;
      btn.disabled = true;
      try {
        await api(app, childrenPath(rep.vol, name), { method: 'DELETE' });
        showMsg(rep, 'info', `Replica ${name} removed.`);
      } catch (e) {
        showMsg(rep, 'error', failure(e, `Could not remove replica ${name}`));
        btn.disabled = false;
      } finally {
        app.hooks.poll();
        app.hooks.pollJobsSoon();
      }
    },
  }, 'Remove');
  return btn;
}
