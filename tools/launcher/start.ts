/**
 * `npm start`: the whole platform on this machine (tools/stack): Postgres and migrations, the token
 * issuer, the SF Compute simulator, `wrangler dev` (API, region scheduler, crons), and a node agent
 * on the local Docker engine for each node the autoscaler buys; it keeps one node warm (8 GPUs of
 * Fast headroom). Ctrl-C stops everything it started, agents' containers included.
 */
import { TEST_IMAGE } from "../docker/stack";
import { type Stack, startStack } from "../stack/index";

const API_PORT = Number(process.env.SCALAR_API_PORT ?? 8787);
const started = Date.now();
const since = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;

let stack: Stack | undefined;
let stopping: Promise<void> | undefined;
/**
 * One stop, however many signals: a terminal's Ctrl-C reaches this process twice (from the
 * terminal, and from npm, which passes it on), and exiting at the second would leave wrangler,
 * Postgres and the agents running.
 */
async function stopAll(code: number): Promise<never> {
  stopping ??= (async () => {
    console.log("\nStopping (agents and their containers, wrangler, the simulator, Postgres)…");
    await stack?.stop().catch((e: unknown) => console.error(String(e)));
    console.log("Stopped.");
  })();
  await stopping;
  process.exit(code);
}
process.on("SIGINT", () => void stopAll(0));
process.on("SIGTERM", () => void stopAll(0));

try {
  console.log("Starting Scalar on this machine…");
  stack = await startStack({
    apiPort: API_PORT,
    fastHeadroomGpus: 8,
    cronIntervalMs: 60_000,
    log: (line) => console.log(`• [${since()}] ${line}`),
  });
  const s = stack;
  void s.crashed.then((message) => {
    console.error(`\n${message}`);
    void stopAll(1);
  });
  const image = s.image ?? `(none: ${s.docker.available ? "the local registry is not up" : "no Docker engine"})`;
  console.log(`
Scalar is running (started in ${since()}).

  API            ${s.apiUrl}
  API reference  ${s.apiUrl}/docs
  API key        ${s.apiKey}
  Access token   ${s.token}
                 (the development user: owner of an operator account entitled to Fast; 12 h)
  Credentials    ${s.credentialsFile ?? "(not saved)"}   (the CLI reads them: no login needed)
  Image          ${image}
  SF Compute     ${s.simUrl}   (the simulator; the autoscaler keeps one 8-GPU node warm)
  Stripe         ${s.stripeUrl}   (the stand-in that monthly invoices go to; its events reach the API signed)
  Docker         ${s.docker.available ? s.docker.detail : `not reachable: ${s.docker.detail}; no node agents will start`}
  Logs           ${s.logs.wrangler}, agents under ${s.stateDir}/agents/

  Try: npx scalar jobs run --gpus 1 --image ${s.image ?? TEST_IMAGE} -- echo hello
       curl -H "Authorization: Bearer ${s.apiKey}" ${s.apiUrl}/v1/me

The first node boots within about a minute (agents are announced above as they start).
Press Ctrl-C to stop everything.`);
} catch (error) {
  console.error(`\nnpm start failed: ${error instanceof Error ? error.message : String(error)}`);
  await stopAll(1);
}
