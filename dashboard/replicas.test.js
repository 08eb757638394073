// node --test dashboard/: what the replica form sends.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { addBody, parseOptions } from './replicas.js';

test('options are key=value lines; blank lines and comments are skipped', () => {
  assert.deepEqual(parseOptions(''), { options: {} });
  assert.deepEqual(parseOptions(' aws_region = eu-west-1 \n\n# a note\r\naws_allow_http=true\ntoken=a=b'), {
    options: { aws_region: 'eu-west-1', aws_allow_http: 'true', token: 'a=b' },
  });
  assert.deepEqual(parseOptions('timeout='), { options: { timeout: '' } });
});

test('a line that is not key=value, or a key given twice, names its line', () => {
  assert.deepEqual(parseOptions('a=1\nno equals sign'), { error: 'options, line 2: "no equals sign" is not key=value' });
  assert.deepEqual(parseOptions('=value'), { error: 'options, line 1: "=value" is not key=value' });
  assert.deepEqual(parseOptions('a=1\n a = 2'), { error: 'options, line 2: a is given twice' });
});

test('the body has the trimmed name and uri, and the options', () => {
  assert.deepEqual(addBody(' d ', ' d.img ', 'timeout=5s'), {
    body: { name: 'd', uri: 'd.img', options: { timeout: '5s' } },
  });
  assert.deepEqual(addBody('', 'd.img', ''), { error: 'the replica needs a name' });
  assert.deepEqual(addBody('d', '  ', ''), { error: 'the replica needs a uri' });
  assert.deepEqual(addBody('d', 'd.img', 'x'), { error: 'options, line 1: "x" is not key=value' });
});
