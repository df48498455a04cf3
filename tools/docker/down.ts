/** `npm run docker:down`: stops the engines and registry this checkout started (`npm run docker:up`). */
import { stopDockerStack } from "./stack";

await stopDockerStack((line) => console.log(`[docker:down] ${line}`));
