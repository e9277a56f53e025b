// Benchmark peer for tests/benches/streams.rs: the same queued-event drain Eddy does, done by a
// plain BullMQ worker whose processor does nothing, so the bench can print Eddy's throughput as a
// ratio to a popular Node.js job queue on the same Redis.
//
// Usage: node drain.mjs REDIS_URL QUEUE EVENTS CONCURRENCY
//
// 1. Empties QUEUE (obliterate) and adds EVENTS jobs carrying the bench's ~100-byte order
//    payload with queue.addBulk, in chunks; not timed.
// 2. Starts a Worker at CONCURRENCY; the clock runs from worker.run() until the worker has
//    emitted 'completed' for EVENTS jobs.
// 3. Prints one JSON line on stdout:
//      {"events": N, "seconds": wall, "events_per_s": x, "cpu_us_per_event": y}
//    where y is process.cpuUsage() user+system over the drain, per event. Any error: a message
//    on stderr and a non-zero exit.
//
// Completion is counted with the worker's 'completed' event, one per job. Jobs are added with
// removeOnComplete: true so 100k finished jobs don't pile up in Redis; BullMQ deletes the job in
// the same script that marks it completed (moveToFinished), before 'completed' is emitted, so the
// removal is inside the measured time, as XACK is for the stream consumers, and nothing is left
// to clean up after the clock stops. removeOnFail stays false: a failed job is a broken run and
// is reported as an error.
import { Queue, Worker } from "bullmq";
import { Redis } from "ioredis";

const PAYLOAD = {
  orderId: "o-1",
  userId: "u-1",
  items: [{ sku: "a", quantity: 1, price: 2.5 }],
};
const ADD_CHUNK = 5000;
// No completion for this long means the drain is stuck: give up rather than hang the bench.
const STALL_MS = 30_000;

function fail(message) {
  process.stderr.write(`drain.mjs: ${message}\n`);
  process.exit(1);
}

const args = process.argv.slice(2);
if (args.length !== 4) {
  process.stderr.write("usage: node drain.mjs REDIS_URL QUEUE EVENTS CONCURRENCY\n");
  process.exit(2);
}
const [url, queueName] = args;
const events = Number(args[2]);
const concurrency = Number(args[3]);
if (!Number.isSafeInteger(events) || events <= 0) fail("EVENTS must be a positive integer");
if (!Number.isSafeInteger(concurrency) || concurrency <= 0)
  fail("CONCURRENCY must be a positive integer");

// BullMQ requires maxRetriesPerRequest: null on connections a worker blocks on; the queue gets
// its own connection with the same settings. An unreachable server fails fast instead of retrying.
const redisOptions = {
  maxRetriesPerRequest: null,
  retryStrategy: (times) => (times > 3 ? null : 200),
};
const queueConnection = new Redis(url, redisOptions);
const workerConnection = new Redis(url, redisOptions);
for (const conn of [queueConnection, workerConnection]) {
  conn.on("error", (err) => fail(`redis: ${err.message}`));
}

async function main() {
  const queue = new Queue(queueName, { connection: queueConnection });
  queue.on("error", (err) => fail(`queue: ${err.message}`));
  await queue.waitUntilReady();
  await queue.obliterate({ force: true });

  for (let added = 0; added < events; added += ADD_CHUNK) {
    const jobs = [];
    for (let n = added; n < Math.min(added + ADD_CHUNK, events); n++) {
      jobs.push({
        name: "OrderPlaced",
        data: PAYLOAD,
        opts: { removeOnComplete: true, removeOnFail: false },
      });
    }
    await queue.addBulk(jobs);
  }

  let completed = 0;
  let lastProgress = Date.now();
  let done;
  const allCompleted = new Promise((resolve) => (done = resolve));

  const worker = new Worker(
    queueName,
    async (job) => {
      // Touch the parsed payload as a minimal real handler would; nothing else.
      if (job.data.orderId === undefined) throw new Error("payload without orderId");
    },
    { connection: workerConnection, concurrency, autorun: false },
  );
  worker.on("error", (err) => fail(`worker: ${err.message}`));
  worker.on("failed", (job, err) => fail(`job ${job?.id} failed: ${err.message}`));
  worker.on("completed", () => {
    completed += 1;
    lastProgress = Date.now();
    if (completed === events) done();
  });
  await worker.waitUntilReady();

  const watchdog = setInterval(() => {
    if (Date.now() - lastProgress > STALL_MS) {
      fail(`stalled after ${completed} of ${events} jobs completed`);
    }
  }, 1000);

  const cpuStart = process.cpuUsage();
  const started = process.hrtime.bigint();
  const running = worker.run();
  await allCompleted;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  clearInterval(watchdog);

  await worker.close();
  await running;
  const left = await queue.getJobCounts("waiting", "active", "delayed", "failed");
  await queue.close();
  await Promise.all([queueConnection.quit(), workerConnection.quit()]);
  const leftOver = Object.entries(left).filter(([, n]) => n > 0);
  if (leftOver.length > 0) fail(`jobs left in the queue: ${JSON.stringify(left)}`);

  process.stdout.write(
    JSON.stringify({
      events: completed,
      seconds,
      events_per_s: completed / seconds,
      cpu_us_per_event: (cpu.user + cpu.system) / completed,
    }) + "\n",
  );
}

main().catch((err) => fail(err?.stack ?? String(err)));
