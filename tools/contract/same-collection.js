// Compares two Postman collections, leaving out the ids Postman draws at
// random on every generation. Exit 0 when they are the same.
const fs = require('fs');
const strip = (v) => {
  if (Array.isArray(v)) return v.map(strip);
  if (v && typeof v === 'object') {
    const out = {};
    for (const k of Object.keys(v).sort()) {
      if (k === 'id' || k === '_postman_id' || k === 'postman_id') continue;
      out[k] = strip(v[k]);
    }
    return out;
  }
  return v;
};
const [a, b] = process.argv.slice(2).map((f) => JSON.stringify(strip(JSON.parse(fs.readFileSync(f, 'utf8')))));
process.exit(a === b ? 0 : 1);
