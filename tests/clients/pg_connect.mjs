// node-postgres client for pgbatten's integration tests: connect with a bundle's PEM files and
// print this session's pg_stat_ssl row as JSON.
//
// usage: node pg_connect.mjs HOST PORT USER BUNDLE_DIR [SERVERNAME]
import fs from "node:fs";
import path from "node:path";
import pg from "pg";

const [host, port, user, dir, servername] = process.argv.slice(2);
if (!dir) {
  console.error("usage: node pg_connect.mjs HOST PORT USER BUNDLE_DIR [SERVERNAME]");
  process.exit(64);
}
const read = (name) => fs.readFileSync(path.join(dir, name)).toString();

const client = new pg.Client({
  host,
  port: Number(port),
  user,
  database: "postgres",
  ssl: {
    ca: read("root.crt"),
    cert: read("postgresql.crt"),
    key: read("postgresql.key"),
    rejectUnauthorized: true,
    // Node verifies the server's certificate against this name (SNI must not be an IP address).
    ...(servername ? { servername } : {}),
  },
  connectionTimeoutMillis: 10000,
});

try {
  await client.connect();
  const result = await client.query(
    "SELECT ssl, version, current_user AS role FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
  );
  console.log(JSON.stringify(result.rows[0]));
  await client.end();
} catch (err) {
  console.error(`node-postgres: ${err.message}`);
  process.exit(1);
}
