/** `npm run openapi`: prints the OpenAPI document of the routes (written to docs/openapi.json). */
import { createApi, openApiDocument } from "./index";

console.log(JSON.stringify(openApiDocument(createApi()), null, 2));
