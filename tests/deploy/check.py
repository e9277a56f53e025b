#!/usr/bin/env python3
"""Checks the deployment kit in deploy/ without a container runtime.

1. `hadolint` finds nothing in deploy/Dockerfile.
2. Every Kubernetes manifest in deploy/kubernetes is valid against the Kubernetes schemas
   (`kubernetes-validate --strict`); the KEDA ScaledObject, whose CRD schema is not bundled,
   gets a structural check of what KEDA's redis-streams scaler reads, and its targets must name
   the Deployment.
3. The Deployment's container runs for real: its exact arguments and environment (the token
   taken from the Secret, Redis pointed at a local `redis-server`), with the binary given by
   `--eddy` in place of the image's. Its readiness probe's exec command and its liveness
   probe's HTTP path must answer success; so must the Dockerfile's HEALTHCHECK command.
4. compose.yaml's host command runs the same way (with its token file), and its services and
   secrets refer to each other consistently.

Exit status 0 when everything holds; otherwise each failure is printed and the status is 1.
"""

import argparse
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FAILURES = []


def fail(message):
    """Records a failure and prints it."""
    FAILURES.append(message)
    print(f"FAIL: {message}")


def free_port():
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def documents(path):
    """The YAML documents of `path`."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def check_dockerfile(hadolint):
    """Step 1."""
    run = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    if run.returncode != 0:
        fail(f"hadolint deploy/Dockerfile:\n{run.stdout}{run.stderr}")


def check_kubernetes(validate):
    """Step 2; returns the manifests by kind."""
    by_kind = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs = documents(path)
        for doc in docs:
            by_kind[doc["kind"]] = doc
        # KEDA's CRD schema is not bundled with kubernetes-validate: checked below instead.
        if all(not d["apiVersion"].startswith("keda.sh/") for d in docs):
            run = subprocess.run([validate, "--strict", str(path)], capture_output=True, text=True)
            if run.returncode != 0 or "passed" not in run.stdout + run.stderr:
                fail(f"kubernetes-validate {path.name}:\n{run.stdout}{run.stderr}")
    scaled = by_kind.get("ScaledObject")
    if scaled is None:
        fail("no KEDA ScaledObject in deploy/kubernetes")
    else:
        check_scaled_object(scaled, by_kind, "redis-streams")
    cluster = DEPLOY / "kubernetes" / "redis-cluster" / "scaledobject.yaml"
    cluster_docs = documents(cluster) if cluster.exists() else []
    if len(cluster_docs) != 1 or cluster_docs[0].get("kind") != "ScaledObject":
        fail("deploy/kubernetes/redis-cluster/scaledobject.yaml should hold one ScaledObject")
    else:
        check_scaled_object(cluster_docs[0], by_kind, "redis-cluster-streams")
    deployment = by_kind["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    grace = pod.get("terminationGracePeriodSeconds", 30)
    args = container.get("args", [])
    facts = dockerfile_facts()
    if facts["entrypoint"] != [facts["copy"]]:
        fail(f"the Dockerfile's ENTRYPOINT {facts['entrypoint']} is not the binary it copies "
             f"({facts['copy']})")
    if healthcheck_command()[:1] != [facts["copy"]]:
        fail("the HEALTHCHECK does not run the binary the image holds")
    uid = str(pod.get("securityContext", {}).get("runAsUser"))
    if facts["user"] is None or facts["user"].split(":")[0] != uid:
        fail(f"runAsUser {uid} is not the image's USER {facts['user']}")
    listen = args[args.index("--listen") + 1] if "--listen" in args else "127.0.0.1:7070"
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    if str(ports.get("api")) != listen.rsplit(":", 1)[1]:
        fail(f"containerPort api {ports.get('api')} is not the port of --listen {listen}")
    for probe in ("readinessProbe", "livenessProbe"):
        command = container[probe].get("exec", {}).get("command", [])
        if command and command[0] != facts["copy"]:
            fail(f"the {probe} runs {command[0]}, not the image's binary")
    # distroless's nonroot user (65532) has its home, and so eddy's cache, in /home/nonroot.
    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    if container.get("securityContext", {}).get("readOnlyRootFilesystem") and \
            "/home/nonroot/.cache" not in mounts:
        fail(f"a read-only root filesystem needs the cache mounted at /home/nonroot/.cache: "
             f"{mounts}")
    if "--grace" in args:
        wanted = int(args[args.index("--grace") + 1].rstrip("s"))
        if grace <= wanted:
            fail(f"terminationGracePeriodSeconds {grace} is not above --grace {wanted}s")
    return by_kind


def check_scaled_object(scaled, by_kind, kind):
    """A ScaledObject's structure: it targets the Deployment, and each trigger is a `kind`
    scaler on a consumer group of the order example, with what that scaler reads."""
    spec = scaled.get("spec", {})
    if spec.get("scaleTargetRef", {}).get("name") != by_kind["Deployment"]["metadata"]["name"]:
        fail("the ScaledObject does not target the Deployment")
    if not spec.get("triggers"):
        fail("the ScaledObject has no triggers")
    groups = function_names()
    known = {"address", "addresses", "host", "port", "hosts", "ports", "stream",
             "consumerGroup", "lagCount", "activationLagCount", "pendingEntriesCount",
             "streamLength", "activationStreamLength", "databaseIndex", "enableTLS",
             "usernameFromEnv", "passwordFromEnv"}
    for trigger in spec.get("triggers", []):
        meta = trigger.get("metadata", {})
        if trigger.get("type") != kind:
            fail(f"trigger type {trigger.get('type')!r}: expected {kind}")
        for key in ("stream", "consumerGroup"):
            if key not in meta:
                fail(f"a {kind} trigger lacks {key}")
        if kind == "redis-cluster-streams":
            addresses = meta.get("addresses", "")
            if not addresses or any(not a.strip() or ":" not in a or a != a.strip()
                                    for a in addresses.split(",")):
                fail(f"addresses {addresses!r}: expected HOST:PORT,HOST:PORT without spaces")
        elif "address" not in meta:
            fail(f"a {kind} trigger lacks address")
        unknown = set(meta) - known
        if unknown:
            fail(f"unknown {kind} metadata {sorted(unknown)}")
        modes = [m for m in ("lagCount", "pendingEntriesCount", "streamLength") if m in meta]
        if len(modes) != 1:
            fail(f"a trigger should scale on exactly one of lag, pending or length: {modes}")
        for key in ("lagCount", "activationLagCount", "pendingEntriesCount", "streamLength"):
            if key in meta and not (isinstance(meta[key], str) and meta[key].isdigit()):
                fail(f"{key} {meta[key]!r}: expected a count as a string, e.g. \"500\"")
        if meta.get("consumerGroup") not in groups:
            fail(f"consumerGroup {meta.get('consumerGroup')!r} is not a function of the "
                 f"order example: {sorted(groups)}")


def function_names():
    """The order example's function names: each is its own consumer group."""
    names = set()
    for path in (ROOT / "examples/order-placed/functions").glob("*.toml"):
        for line in path.read_text().splitlines():
            if line.startswith("name = "):
                names.add(line.split("=", 1)[1].strip().strip('"'))
    return names


def dockerfile_facts():
    """(binary path COPYed into the final image, USER, ENTRYPOINT, HEALTHCHECK command)."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    final = text[text.rindex("\nFROM "):]
    facts = {"copy": None, "user": None, "entrypoint": None}
    for line in final.splitlines():
        if line.startswith("COPY --from="):
            facts["copy"] = line.split()[-1]
        elif line.startswith("USER "):
            facts["user"] = line.split()[1]
        elif line.startswith("ENTRYPOINT "):
            facts["entrypoint"] = yaml.safe_load(line[len("ENTRYPOINT "):])
    return facts


def start_redis():
    """A redis-server on a free port; returns (process, url)."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def with_local_listen(args, port):
    """`args` with the listen address moved to a free loopback port (0.0.0.0 stays the bind
    address, as in the container)."""
    out = list(args)
    if "--listen" in out:
        out[out.index("--listen") + 1] = f"0.0.0.0:{port}"
    return out


def run_host(eddy, args, env, port, what, probes):
    """Runs `eddy args` with `env`, then each probe (a function returning an error or None)."""
    log = tempfile.NamedTemporaryFile(prefix="eddy-deploy-check-", suffix=".log", delete=False)
    host = subprocess.Popen([eddy, *with_local_listen(args, port)], env=env, stdout=log,
                            stderr=log)
    try:
        deadline = time.time() + 60
        errors = {}
        while time.time() < deadline:
            if host.poll() is not None:
                break
            errors = {name: probe() for name, probe in probes.items()}
            if not any(errors.values()):
                return
            time.sleep(0.5)
        log.flush()
        text = Path(log.name).read_text()[-2000:]
        fail(f"{what}: probes did not pass: {errors} (host exit {host.poll()}); log:\n{text}")
    finally:
        host.terminate()
        try:
            host.wait(timeout=40)
        except subprocess.TimeoutExpired:
            host.kill()
        os.unlink(log.name)


def exec_probe(eddy, command, env, port):
    """A probe running `command` (an exec probe or HEALTHCHECK) with the image's path to eddy
    replaced and the host port moved; error text or None."""
    image_binary = dockerfile_facts()["copy"]
    argv = [eddy if c == image_binary else c for c in command]
    argv = [c.replace(":7070", f":{port}") for c in argv]

    def probe():
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
        return None if run.returncode == 0 else f"{shlex.join(command)}: {run.stdout.strip()}"
    return probe


def http_probe(path, port):
    """A probe asking GET `path` on the port; error text or None."""
    def probe():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
                return None if 200 <= r.status < 300 else f"GET {path}: {r.status}"
        except Exception as error:  # the probe's answer is the error itself
            return f"GET {path}: {error}"
    return probe


def healthcheck_command():
    """The Dockerfile HEALTHCHECK's exec form."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith("HEALTHCHECK"):
            return yaml.safe_load(line[line.index("CMD") + 3:].strip())
    fail("the Dockerfile has no HEALTHCHECK")
    return []


def check_deployment_runs(eddy, by_kind, redis_url):
    """Step 3."""
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    secret = by_kind["Secret"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.mkdtemp()}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            if ref["name"] != secret["metadata"]["name"]:
                fail(f"env {item['name']} refers to a secret not in the kit")
            env[item["name"]] = secret["stringData"][ref["key"]]
    env["EDDY_REDIS_URL"] = redis_url
    port = free_port()
    liveness = container["livenessProbe"]["httpGet"]["path"]
    probes = {
        "readiness": exec_probe(eddy, container["readinessProbe"]["exec"]["command"], env, port),
        "liveness": http_probe(liveness, port),
        "healthcheck": exec_probe(eddy, healthcheck_command(), env, port),
    }
    if container.get("command"):
        fail("the container overrides the image's entrypoint; only args are expected")
    run_host(eddy, container["args"], env, port, "the Deployment's container", probes)


def check_compose(eddy, redis_url):
    """Step 4."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    secrets = set(compose.get("secrets", {}))
    for name, service in services.items():
        for secret in service.get("secrets", []):
            if secret not in secrets:
                fail(f"compose service {name} uses undeclared secret {secret}")
        for dependency in service.get("depends_on", {}):
            if dependency not in services:
                fail(f"compose service {name} depends on unknown service {dependency}")
        if "image" not in service and "build" not in service:
            fail(f"compose service {name} has neither image nor build")
    for name, service in services.items():
        used = [a.split("/run/secrets/", 1)[1] for a in service.get("command", [])
                if isinstance(a, str) and a.startswith("/run/secrets/")]
        for secret in used:
            if secret not in service.get("secrets", []):
                fail(f"compose service {name} reads /run/secrets/{secret} without that secret")
    host = services["host1"]
    with tempfile.TemporaryDirectory() as scratch:
        token_file = Path(scratch) / "token"
        token_file.write_text("a-compose-token-for-the-check\n")
        args = [str(token_file) if a == "/run/secrets/eddy_token" else a
                for a in host["command"]]
        # Only what compose gives the host: the token must come from its --token-file.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": scratch,
               **host.get("environment", {}), "EDDY_REDIS_URL": redis_url}
        probe_env = {**env, "EDDY_TOKEN": "a-compose-token-for-the-check"}
        port = free_port()
        run_host(eddy, args, env, port, "compose's host1", {
            "healthz": http_probe("/healthz", port),
            "readyz": exec_probe(eddy, ["/usr/local/bin/eddy", "probe", "--host",
                                        "http://127.0.0.1:7070", "/readyz"], probe_env, port),
        })
    for name, service in services.items():
        if name.startswith("deploy-"):
            command = service["command"]
            if command[0] != "deploy" or "--token-file" not in command:
                fail(f"compose service {name} does not deploy with the token file")
            manifest = command[1].replace("/examples/order-placed", str(ROOT / "examples/order-placed"))
            if not Path(manifest).is_file():
                fail(f"compose service {name} deploys a manifest that does not exist: {command[1]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eddy", default=os.environ.get("EDDY_BIN", "eddy"))
    parser.add_argument("--bin-dir", required=True,
                        help="where hadolint and kubernetes-validate are installed")
    args = parser.parse_args()
    bin_dir = Path(args.bin_dir)
    check_dockerfile(str(bin_dir / "hadolint"))
    by_kind = check_kubernetes(str(bin_dir / "kubernetes-validate"))
    redis, redis_url = start_redis()
    try:
        check_deployment_runs(args.eddy, by_kind, redis_url)
        check_compose(args.eddy, redis_url)
    finally:
        redis.kill()
        redis.wait()
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        sys.exit(1)
    print("the deployment kit holds")


if __name__ == "__main__":
    main()
