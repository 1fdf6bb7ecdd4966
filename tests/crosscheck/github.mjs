// Signs GitHub webhook payloads with GitHub's own signing code,
// @octokit/webhooks-methods `sign(secret, payload)`, for the cross-check
// suite. It sends nothing: it writes the signed payloads to a JSON file that
// crosscheck.py sends to the gateway (one driver, one report).
//
// usage: CROSSCHECK_SECRETS='{"github": ["primary", "rotated"], ...}' \
//        node tests/crosscheck/github.mjs OUT.json
//
// OUT.json: {"library": "@octokit/webhooks-methods <version>",
//            "signed": {"<role>": {"payload": "...", "signature": "sha256=..."}}}
// with roles primary (first configured secret), rotated (second configured
// secret) and other (a secret the gateway does not know).

import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { sign, verify } from "@octokit/webhooks-methods";

const OTHER_SECRET = "crosscheck-github-secret-the-gateway-does-not-know";

function fail(message) {
  console.error(`github.mjs: ${message}`);
  process.exit(2);
}

const out = process.argv[2];
if (!out) fail("usage: node github.mjs OUT.json (secrets in CROSSCHECK_SECRETS)");

let secrets;
try {
  secrets = JSON.parse(process.env.CROSSCHECK_SECRETS ?? "").github;
} catch (err) {
  fail(`CROSSCHECK_SECRETS is not JSON: ${err.message}`);
}
if (!Array.isArray(secrets) || secrets.length < 2) {
  fail("CROSSCHECK_SECRETS.github must list two secrets (primary, rotated)");
}

const roles = { primary: secrets[0], rotated: secrets[1], other: OTHER_SECRET };
const signed = {};
for (const [role, secret] of Object.entries(roles)) {
  // Shaped like a real delivery, with non-ASCII text so that the bytes the
  // driver sends (UTF-8) are what was signed.
  const payload = JSON.stringify({
    action: "opened",
    issue: { number: 1347, title: `Crosscheck ${role}: café ✓` },
    repository: { full_name: "octocat/Hello-World" },
    nonce: randomUUID(),
  });
  const signature = await sign(secret, payload);
  if (!(await verify(secret, payload, signature))) fail(`octokit does not verify its own ${role} signature`);
  signed[role] = { payload, signature };
}

// GitHub's verify() compares the lowercase hex string exactly: the primary
// signature in uppercase is not GitHub's, and the gateway must refuse it too.
const uppercase = {
  payload: signed.primary.payload,
  signature: `sha256=${signed.primary.signature.slice("sha256=".length).toUpperCase()}`,
};
uppercase.library_accepts = await verify(secrets[0], uppercase.payload, uppercase.signature);

writeFileSync(
  out,
  JSON.stringify({ library: `@octokit/webhooks-methods ${sign.VERSION}`, signed, uppercase }, null, 2),
);
console.log(`github.mjs: signed ${Object.keys(signed).length} payloads with @octokit/webhooks-methods ${sign.VERSION}`);
