// Validates prometheus-operator objects (ServiceMonitor, PodMonitor, PrometheusRule) against the
// CRD schemas shipped in @kubernetes-models/prometheus-operator (installed by testbed/setup.sh).
//   node validate-monitoring.mjs <chart-npm dir> <objects.json>
// objects.json: a JSON array of objects. Prints one line per object; exits 1 on any failure.
import { readFileSync } from "node:fs";
import { join } from "node:path";

const [npmDir, file] = process.argv.slice(2);
const base = join(npmDir, "node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");
const objects = JSON.parse(readFileSync(file, "utf8"));
let failed = 0;
for (const obj of objects) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  if (!["ServiceMonitor", "PodMonitor", "PrometheusRule"].includes(obj.kind)) {
    console.log(`FAIL ${name}: not a monitoring kind`);
    failed++;
    continue;
  }
  const mod = await import(join(base, `${obj.kind}.js`));
  try {
    new mod[obj.kind](obj).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
