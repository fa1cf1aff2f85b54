// The JavaScript client (@kubernetes/client-node, from npm, unchanged) against skiff: list,
// create, watch, merge patch, exec (WebSocket) and a pod's log.
//
// Usage: node js_client.mjs KUBECONFIG IMAGE   (NODE_PATH names the client's node_modules)
// Prints "all steps passed" at the end; any failure throws.
import { createRequire } from 'node:module';
import { PassThrough } from 'node:stream';
import path from 'node:path';

// The client lives in a cache outside the repository: resolve it from NODE_PATH.
const require = createRequire(path.join(process.env.NODE_PATH || '.', 'noop.js'));
const k8s = await import(require.resolve('@kubernetes/client-node'));

const [kubeconfig, image] = process.argv.slice(2);
const kc = new k8s.KubeConfig();
kc.loadFromFile(kubeconfig);
const core = kc.makeApiClient(k8s.CoreV1Api);
const ns = 'default';
const suffix = Date.now().toString(36);
const cmName = `js-cm-${suffix}`;
const podName = `js-pod-${suffix}`;

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function until(what, f, seconds = 60) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

// list
const namespaces = await core.listNamespace();
assert(namespaces.items.some((n) => n.metadata.name === 'default'), 'no default namespace listed');
console.log('list ok');

// watch, then create and patch what it watches
const seen = [];
const watch = new k8s.Watch(kc);
const req = await watch.watch(
  `/api/v1/namespaces/${ns}/configmaps`,
  { labelSelector: `js-suite=${suffix}` },
  (type, obj) => seen.push(`${type}/${obj.metadata.name}/${obj.data?.k}`),
  (err) => { if (err && err.name !== 'AbortError') seen.push(`error/${err}`); },
);
const created = await core.createNamespacedConfigMap({
  namespace: ns,
  body: { metadata: { name: cmName, labels: { 'js-suite': suffix } }, data: { k: 'v1' } },
});
assert(created.metadata.uid, 'created ConfigMap has no uid');
console.log('create ok');

const patched = await core.patchNamespacedConfigMap(
  { name: cmName, namespace: ns, body: { data: { k: 'v2' } } },
  k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
);
assert(patched.data.k === 'v2', `merge patch gave ${JSON.stringify(patched.data)}`);
console.log('patch ok');

await until('the watch to see ADDED and MODIFIED', () =>
  seen.includes(`ADDED/${cmName}/v1`) && seen.includes(`MODIFIED/${cmName}/v2`));
req.abort();
assert(!seen.some((s) => s.startsWith('error/')), `watch errors: ${seen}`);
console.log('watch ok');

// a pod: exec into it, read its log
await core.createNamespacedPod({
  namespace: ns,
  body: {
    metadata: { name: podName },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'c', image, command: ['sh', '-c', 'echo hello from js; exec sleep 3600'] }],
    },
  },
});
await until('the pod to run', async () =>
  (await core.readNamespacedPod({ name: podName, namespace: ns })).status.phase === 'Running', 120);

const out = new PassThrough();
let stdout = '';
out.on('data', (d) => { stdout += d; });
const status = await new Promise((resolve, reject) => {
  new k8s.Exec(kc)
    .exec(ns, podName, 'c', ['sh', '-c', 'echo js-exec-$((40+2))'], out, null, null, false, resolve)
    .catch(reject);
});
assert(status.status === 'Success', `exec status ${JSON.stringify(status)}`);
await until('the exec output', () => stdout === 'js-exec-42\n', 10);
console.log('exec ok');

const logs = new PassThrough();
let logText = '';
logs.on('data', (d) => { logText += d; });
await new k8s.Log(kc).log(ns, podName, 'c', logs, { follow: false });
await until('the log', () => logText.includes('hello from js'), 20);
console.log('log ok');

await core.deleteNamespacedPod({ name: podName, namespace: ns });
await core.deleteNamespacedConfigMap({ name: cmName, namespace: ns });
console.log('all steps passed');
