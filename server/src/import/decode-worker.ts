/**
 * A decoding process of an image import (DecodePool): decodes the files it is sent with sharp, one
 * at a time, and answers each with the pixels or the reason the file cannot be imported.
 */
import { decodeBySharp, readImageFile, reasonOf } from './image-decode.js';
import type { DecodeReply, DecodeRequest } from './decode-pool.js';

// Fault injection for the tests: a file whose path ends with this text kills its decoding
// process, as a decoder crash on a hostile file would.
const crashOn = process.env['DISTILLATE_TEST_DECODER_CRASH_ON'];

// One file at a time, in the order sent: if this process dies, the file it held is the first
// the pool is still waiting for, and the others can go to another process.
let queue = Promise.resolve();
process.on('message', (m: DecodeRequest) => {
  queue = queue.then(async () => {
    const path = Buffer.from(m.path, 'base64');
    if (crashOn !== undefined && crashOn !== '' && path.toString('latin1').endsWith(crashOn)) process.kill(process.pid, 'SIGKILL');
    try {
      const d = await decodeBySharp(readImageFile(path), m.options);
      send({ id: m.id, pixels: d.pixels.toString('base64'), width: d.width, height: d.height });
    } catch (err) {
      send({ id: m.id, error: reasonOf(err) });
    }
  });
});

function send(reply: DecodeReply): void {
  process.send!(reply);
}

// The pool closes the channel when it is done: leave then (sharp's threads would keep the process).
process.on('disconnect', () => process.exit(0));
