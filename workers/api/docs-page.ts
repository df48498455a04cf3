/**
 * The human-readable API reference at `GET /docs`, rendered from the OpenAPI document itself (no
 * script, nothing fetched from elsewhere), so it cannot drift from the routes.
 */
type Json = Record<string, unknown>;

const esc = (s: unknown) =>
  String(s ?? "").replace(
    /[&<>"']/g,
    (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]!,
  );

function typeOf(schema: Json | undefined, components: Json): string {
  if (!schema) return "";
  if (typeof schema.$ref === "string") {
    const name = schema.$ref.split("/").pop()!;
    return `<a href="#schema-${esc(name)}">${esc(name)}</a>`;
  }
  if (Array.isArray(schema.anyOf)) return (schema.anyOf as Json[]).map((s) => typeOf(s, components)).join(" | ");
  if (Array.isArray(schema.enum))
    return (schema.enum as unknown[]).map((v) => `<code>${esc(JSON.stringify(v))}</code>`).join(" | ");
  const t = Array.isArray(schema.type) ? schema.type.join(" | ") : String(schema.type ?? "any");
  if (t.includes("array")) return `${typeOf(schema.items as Json, components)}[]`;
  return esc(t);
}

function properties(schema: Json | undefined, components: Json): string {
  if (!schema) return "";
  const target =
    typeof schema.$ref === "string" ? ((components[schema.$ref.split("/").pop()!] as Json) ?? schema) : schema;
  const props = (target.properties ?? {}) as Record<string, Json>;
  const required = new Set((target.required as string[]) ?? []);
  const rows = Object.entries(props)
    .map(
      ([name, p]) =>
        `<tr><td><code>${esc(name)}</code>${required.has(name) ? " *" : ""}</td><td>${typeOf(p, components)}</td><td>${esc(p.description ?? "")}${
          p.default !== undefined ? ` Default <code>${esc(JSON.stringify(p.default))}</code>.` : ""
        }</td></tr>`,
    )
    .join("");
  return rows ? `<table><tr><th>field</th><th>type</th><th></th></tr>${rows}</table>` : "";
}

export function docsPage(document: object): string {
  const doc = document as Json;
  const info = doc.info as Json;
  const components = ((doc.components as Json)?.schemas ?? {}) as Json;
  const paths = (doc.paths ?? {}) as Record<string, Record<string, Json>>;
  const byTag = new Map<string, string[]>();
  for (const [path, ops] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = ((op.tags as string[]) ?? ["Other"])[0]!;
      const params = ((op.parameters as Json[]) ?? [])
        .map(
          (p) =>
            `<li><code>${esc(p.name)}</code> (${esc(p.in)})${p.required ? " *" : ""} ${typeOf(p.schema as Json, components)} ${esc(p.description ?? "")}</li>`,
        )
        .join("");
      const body = ((op.requestBody as Json)?.content as Record<string, Json> | undefined)?.["application/json"]
        ?.schema as Json | undefined;
      const responses = Object.entries((op.responses ?? {}) as Record<string, Json>)
        .map(([status, r]) => {
          const schema = (r.content as Record<string, Json> | undefined)?.["application/json"]?.schema as
            | Json
            | undefined;
          return `<li><b>${esc(status)}</b> ${esc(r.description)} ${schema ? typeOf(schema, components) : ""}</li>`;
        })
        .join("");
      const section = `<section id="${esc(op.operationId ?? `${method}-${path}`)}">
<h3><span class="m">${esc(method.toUpperCase())}</span> <code>${esc(path)}</code> — ${esc(op.summary)}</h3>
<p>${esc(op.description ?? "")}</p>
${params ? `<h4>Parameters</h4><ul>${params}</ul>` : ""}
${body ? `<h4>Body ${typeOf(body, components)}</h4>${properties(body, components)}` : ""}
<h4>Responses</h4><ul>${responses}</ul></section>`;
      byTag.set(tag, [...(byTag.get(tag) ?? []), section]);
    }
  }
  const schemas = Object.entries(components)
    .map(
      ([name, s]) =>
        `<section id="schema-${esc(name)}"><h3>${esc(name)}</h3>${properties(s as Json, components)}</section>`,
    )
    .join("");
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(info.title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#1b1f24}
code{background:#f3f4f6;padding:0 .25em;border-radius:3px}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}.m{font-weight:700;color:#0a58ca}
section{border-top:1px solid #eee;padding-top:.5rem}</style></head><body>
<h1>${esc(info.title)} <small>${esc(info.version)}</small></h1><p>${esc(info.description)}</p>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>. Guide: docs/api.md in the repository.</p>
${[...byTag.entries()].map(([tag, sections]) => `<h2>${esc(tag)}</h2>${sections.join("")}`).join("")}
<h2>Schemas</h2>${schemas}</body></html>`;
}
