/** The real redis-server the tests start (the same helper the distributed benchmark uses). */
export { freePort, startRedis, type TestRedis } from '../../scripts/bench/redis-server.js';
