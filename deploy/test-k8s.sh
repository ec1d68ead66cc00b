#!/usr/bin/env bash
# Renders the Kubernetes manifests (kustomize base and the dev overlay) and validates them
# offline against the Kubernetes JSON schemas shipped by `kubernetes-validate` (PyPI), in strict
# mode (unknown fields are errors), then checks Kelp's own deployment rules on the rendered
# objects. Fails on any error. No cluster is needed.
#
# env: KELP_K8S_VERSIONS (default "1.32.0 1.37.0": the oldest and newest we validate against)
set -euo pipefail

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSIONS="${KELP_K8S_VERSIONS:-1.32.0 1.37.0}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/kelp-k8s.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT

# Renderer: kubectl's built-in kustomize, else a standalone kustomize.
if command -v kubectl >/dev/null 2>&1; then
    render() { kubectl kustomize "$1"; }
elif command -v kustomize >/dev/null 2>&1; then
    render() { kustomize build "$1"; }
else
    echo "FAIL: neither kubectl nor kustomize is installed" >&2
    exit 1
fi

if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
    echo "installing kubernetes-validate from PyPI"
    python3 -m pip install --quiet kubernetes-validate
fi
KV=(python3 -m kubernetes_validate)
"${KV[@]}" --version

status=0
for target in base overlays/dev; do
    name="${target//\//-}"
    file="$OUT/$name.yaml"
    echo
    echo "=== render deploy/k8s/$target"
    render "$DEPLOY_DIR/k8s/$target" >"$file"
    python3 - "$file" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    print(f"  {d['kind']}/{d['metadata']['name']}"
          + (f" (namespace {d['metadata']['namespace']})" if d['metadata'].get('namespace') else ""))
EOF
    for v in $K8S_VERSIONS; do
        echo "=== kubernetes-validate --strict -k $v deploy/k8s/$target"
        if ! "${KV[@]}" --strict -k "$v" "$file"; then
            echo "FAIL: deploy/k8s/$target does not validate against Kubernetes $v" >&2
            status=1
        fi
    done
    echo "=== Kelp deployment rules on deploy/k8s/$target"
    if ! python3 - "$file" "$target" <<'EOF'; then
import sys, yaml

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
target = sys.argv[2]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
errors = []
def check(ok, msg):
    if not ok:
        errors.append(msg)

sts = by_kind.get("StatefulSet", {})
services = by_kind.get("Service", {})
cms = by_kind.get("ConfigMap", {})
check(len(cms) == 1, f"expected one ConfigMap, found {list(cms)}")
cm = next(iter(cms.values()), {"data": {}})
check(cm["data"].get("KELP_DIR") == "/data", "ConfigMap must set KELP_DIR=/data")
for name in ("kelp-master", "kelp-volume", "kelp-filer", "kelp-broker"):
    check(name in sts, f"StatefulSet {name} missing")
for name, s in sts.items():
    spec = s["spec"]
    pod = spec["template"]["spec"]
    svc = services.get(spec["serviceName"])
    check(svc is not None, f"{name}: governing Service {spec['serviceName']} missing")
    if svc:
        check(svc["spec"].get("clusterIP") == "None", f"{name}: governing Service must be headless")
        check(svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items(),
              f"{name}: Service selector does not match the pods")
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    check("data" in claims, f"{name}: no PVC template 'data'")
    if target == "overlays/dev":
        check(spec["replicas"] == 1, f"{name}: dev overlay must run 1 replica")
    if name == "kelp-master":
        check(spec["replicas"] == 1, "kelp-master must have exactly 1 replica")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if name == "kelp-broker":
        check(grace >= 60, f"kelp-broker: terminationGracePeriodSeconds {grace} < 60")
    for c in pod["containers"]:
        where = f"{name}/{c['name']}"
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        check(any(r.get("configMapRef", {}).get("name") == cm["metadata"].get("name")
                  for r in c.get("envFrom", [])), f"{where}: does not use the ConfigMap")
        check("KELP_PORT" in env, f"{where}: KELP_PORT not set")
        port = int(env.get("KELP_PORT") or 0)
        check(any(p["containerPort"] == port for p in c.get("ports", [])),
              f"{where}: containerPort != KELP_PORT")
        check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
              f"{where}: readinessProbe must GET /readyz")
        check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
              f"{where}: livenessProbe must GET /healthz")
        req = c.get("resources", {}).get("requests", {})
        check("cpu" in req and "memory" in req, f"{where}: cpu and memory requests required")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        # The incident rule: the data dir flag points exactly at the persistent mount.
        check(mounts.get("/data") == "data", f"{where}: the PVC 'data' must be mounted at /data")
        check(env.get("KELP_DIR", "/data") == "/data", f"{where}: KELP_DIR overridden")
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True,
              f"{where}: root filesystem must be read-only (no writes outside /data)")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True, f"{name}: must run as non-root")
    check(psc.get("fsGroup") == psc.get("runAsUser") == 10001,
          f"{name}: runAsUser and fsGroup must be the image's user 10001")
vol = sts.get("kelp-volume")
if vol:
    env = {e["name"]: e.get("value") for e in vol["spec"]["template"]["spec"]["containers"][0]["env"]}
    check("kelp-volume" in (env.get("KELP_PUBLIC_URL") or ""),
          "kelp-volume: KELP_PUBLIC_URL must be the pod's stable name under the headless Service")
    check(services["kelp-volume"]["spec"].get("publishNotReadyAddresses") is True,
          "kelp-volume: headless Service must publish not-ready addresses")
if errors:
    print("\n".join("  ERROR: " + e for e in errors))
    sys.exit(1)
print(f"  ok: {len(sts)} StatefulSets, {len(services)} Services, 1 ConfigMap")
EOF
        echo "FAIL: deploy/k8s/$target breaks a Kelp deployment rule" >&2
        status=1
    fi
done

echo
if [[ $status == 0 ]]; then
    echo "PASS: deploy/k8s base and overlays/dev render and validate (Kubernetes $K8S_VERSIONS)"
else
    echo "FAIL: deploy/k8s" >&2
fi
exit $status
