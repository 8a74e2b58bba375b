// Generates src/gen/ from the proto files (buf.gen.yaml) and puts the
// service config beside it, so the client ships the one in clients/.
"use strict";
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const out = path.join(root, "src", "gen");
fs.rmSync(out, { recursive: true, force: true });
const buf = path.join(root, "node_modules", ".bin", process.platform === "win32" ? "buf.cmd" : "buf");
execFileSync(buf, ["generate", "--template", "buf.gen.yaml"], { cwd: root, stdio: "inherit" });
fs.copyFileSync(path.join(root, "..", "service_config.json"), path.join(out, "service_config.json"));
console.log(`generated ${path.relative(process.cwd(), out) || out}`);
