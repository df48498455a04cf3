/** Registry credentials through the Worker in workerd: set, replace, list, remove; sealed at rest. */
import { describe, expect, it } from "vitest";
import { addMember, call, createKey, signUp, sql } from "./test-support";

describe("registry credentials", () => {
  it("are set, replaced, listed and removed by an admin, sealed at rest and never returned", async () => {
    const owner = await signUp();
    const created = await call("POST", "/v1/registry-credentials", owner.token, {
      body: { registry: "ghcr.io", username: "ci-bot", password: "ghp_first_secret" },
    });
    expect(created.status).toBe(201);
    expect(created.json).toEqual({
      id: expect.any(String),
      registry: "ghcr.io",
      username: "ci-bot",
      created_at: expect.any(String),
      updated_at: created.json.created_at,
    });
    expect(created.text).not.toContain("ghp_first_secret");
    const id = created.json.id as string;

    // The same registry again (Docker Hub's other name for another) replaces; a new one is created.
    const replaced = await call("POST", "/v1/registry-credentials", owner.token, {
      body: { registry: "ghcr.io", username: "ci-bot-2", password: "ghp_second_secret" },
    });
    expect(replaced.status).toBe(200);
    expect(replaced.json).toMatchObject({ id, registry: "ghcr.io", username: "ci-bot-2" });
    expect(replaced.json.updated_at > replaced.json.created_at).toBe(true);
    const hub = await call("POST", "/v1/registry-credentials", owner.token, {
      body: { registry: "index.docker.io", username: "hubuser", password: "dckr_pat_x" },
    });
    expect(hub.status).toBe(201);
    expect(hub.json.registry).toBe("docker.io");

    const stored = await sql<{ registry: string; sealed_password: string }>(
      "select registry, sealed_password from registry_credentials where account_id = $1 order by registry",
      [owner.accountId],
    );
    expect(stored.map((r) => r.registry)).toEqual(["docker.io", "ghcr.io"]);
    for (const r of stored) expect(r.sealed_password).toMatch(/^v1\./);
    expect(JSON.stringify(stored)).not.toMatch(/ghp_|dckr_pat/);

    // Listed newest first, a page at a time, without passwords; filtered by registry.
    const first = await call("GET", "/v1/registry-credentials?limit=1", owner.token);
    expect(first.status).toBe(200);
    expect(first.json.data.map((r: { registry: string }) => r.registry)).toEqual(["docker.io"]);
    const second = await call("GET", `/v1/registry-credentials?limit=1&cursor=${first.json.next_cursor}`, owner.token);
    expect(second.json.data.map((r: { registry: string }) => r.registry)).toEqual(["ghcr.io"]);
    expect(second.json.next_cursor).toBeNull();
    const only = await call("GET", "/v1/registry-credentials?registry=registry-1.docker.io", owner.token);
    expect(only.json.data.map((r: { id: string }) => r.id)).toEqual([hub.json.id]);

    const audits = await sql<{ action: string; data: Record<string, unknown> }>(
      "select action, data from audit_log where account_id = $1 and target_type = 'registry_credentials' order by id",
      [owner.accountId],
    );
    expect(audits.map((a) => a.action)).toEqual([
      "registry_credentials.created",
      "registry_credentials.replaced",
      "registry_credentials.created",
    ]);
    expect(JSON.stringify(audits)).not.toMatch(/ghp_|dckr_pat/);

    const removed = await call("DELETE", `/v1/registry-credentials/${id}`, owner.token);
    expect(removed.status).toBe(200);
    expect(removed.json).toMatchObject({ id, registry: "ghcr.io" });
    expect((await call("DELETE", `/v1/registry-credentials/${id}`, owner.token)).status).toBe(404);
    const left = await call("GET", "/v1/registry-credentials", owner.token);
    expect(left.json.data.map((r: { registry: string }) => r.registry)).toEqual(["docker.io"]);
  });

  it("refuses bad input with the field named, and stores nothing", async () => {
    const owner = await signUp();
    for (const [body, field] of [
      [{ registry: "https://ghcr.io", username: "u", password: "p" }, "registry"],
      [{ registry: "ghcr.io/org", username: "u", password: "p" }, "registry"],
      [{ registry: "ghcr.io", username: "", password: "p" }, "username"],
      [{ registry: "ghcr.io", username: "u" }, "password"],
      [{ registry: "ghcr.io", username: "u", password: "p", email: "x@y" }, "email"],
    ] as const) {
      const res = await call("POST", "/v1/registry-credentials", owner.token, { body });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.json.error.details.fields[0].field).toBe(field);
    }
    const rows = await sql("select 1 from registry_credentials where account_id = $1", [owner.accountId]);
    expect(rows).toEqual([]);
  });

  it("needs the admin scope to set or remove; members and read keys may list; other accounts see none", async () => {
    const owner = await signUp();
    const set = await call("POST", "/v1/registry-credentials", owner.token, {
      body: { registry: "registry.example.com:5000", username: "deploy", password: "s3cret" },
    });
    expect(set.status).toBe(201);
    const member = await addMember(owner.accountId, "member");
    const asMember = { account: owner.accountId };
    const refused = await call("POST", "/v1/registry-credentials", member.token, {
      ...asMember,
      body: { registry: "ghcr.io", username: "u", password: "p" },
    });
    expect(refused.status).toBe(403);
    expect(refused.json.error.code).toBe("missing_scope");
    expect((await call("DELETE", `/v1/registry-credentials/${set.json.id}`, member.token, asMember)).status).toBe(403);
    const listed = await call("GET", "/v1/registry-credentials", member.token, asMember);
    expect(listed.json.data.map((r: { username: string }) => r.username)).toEqual(["deploy"]);

    const readKey = await createKey(owner.token, ["jobs:read"]);
    expect((await call("GET", "/v1/registry-credentials", readKey.secret)).json.data).toHaveLength(1);
    const adminKey = await createKey(owner.token, ["admin"]);
    expect(
      (
        await call("POST", "/v1/registry-credentials", adminKey.secret, {
          body: { registry: "ghcr.io", username: "u", password: "p" },
        })
      ).status,
    ).toBe(201);

    const stranger = await signUp();
    expect((await call("GET", "/v1/registry-credentials", stranger.token)).json.data).toEqual([]);
    expect((await call("DELETE", `/v1/registry-credentials/${set.json.id}`, stranger.token)).status).toBe(404);
  });
});
