"""The Helm chart: `helm lint` and `helm template` with the pinned helm, what the rendered
manifests promise, and the rendered ingest and worker run by `podman kube play` (host network)
against the local services, answering a signed alert."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from shared.settings import Settings
from tests.conftest import EventTap, wait_until
from tests.containers import IMAGE, ROOT, podman
from tests.deploy.test_image import post_alert
from tests.processes import answers, free_port

pytestmark = pytest.mark.deploy

CHART = ROOT / "deploy" / "helm" / "hh-callbacks"
CONNECTIONS = ["--set", "connections.amqpUrl=amqp://guest:guest@127.0.0.1:5672/",
               "--set", "connections.mongoUrl=mongodb://127.0.0.1:27017"]
Manifest = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = subprocess.run([str(ROOT / "deploy" / "tools.sh"), "helm-path"], check=True,
                            capture_output=True, text=True).stdout.strip()
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def render(*args: str) -> list[Manifest]:
    done = helm("template", "hh", str(CHART), *CONNECTIONS, *args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def kinds(manifests: list[Manifest]) -> list[tuple[str, str]]:
    return sorted((m["kind"], m["metadata"]["name"]) for m in manifests)


def deployments(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {m["metadata"]["name"].rsplit("-", 1)[1]: m
            for m in manifests if m["kind"] == "Deployment"}


def test_chart_lints_and_refuses_to_render_without_its_connections() -> None:
    linted = helm("lint", "--strict", str(CHART), *CONNECTIONS)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    missing = helm("template", "hh", str(CHART))
    assert missing.returncode != 0
    assert "connections.amqpUrl (or connections.existingSecret) is required" in missing.stderr


def test_default_render_scales_on_cpu_and_runs_locked_down() -> None:
    manifests = render()
    assert kinds(manifests) == [
        ("ConfigMap", "hh-hh-callbacks-config"),
        ("Deployment", "hh-hh-callbacks-ingest"), ("Deployment", "hh-hh-callbacks-worker"),
        ("HorizontalPodAutoscaler", "hh-hh-callbacks-ingest"),
        ("HorizontalPodAutoscaler", "hh-hh-callbacks-worker"),
        ("PodDisruptionBudget", "hh-hh-callbacks-ingest"),
        ("PodDisruptionBudget", "hh-hh-callbacks-worker"),
        ("Secret", "hh-hh-callbacks-connections"), ("Secret", "hh-hh-callbacks-keys"),
        ("Service", "hh-hh-callbacks-ingest"), ("Service", "hh-hh-callbacks-worker"),
    ]
    for name, deployment in deployments(manifests).items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["command"] == [f"hh-{name}"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert {"livenessProbe", "readinessProbe", "startupProbe"} <= container.keys()
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        # Keys come from a Secret, as files beside config.toml; URLs from a Secret, as env.
        [volume] = pod["volumes"]
        sources = volume["projected"]["sources"]
        assert sources[1]["secret"]["name"] == "hh-hh-callbacks-keys"
        env = {e["name"]: e for e in container["env"]}
        assert env["HH_AMQP_URL"]["valueFrom"]["secretKeyRef"]["key"] == "amqp-url"
        assert "value" not in env["HH_MONGO_URL"]


def test_a_clusters_nodes_reach_every_process_from_the_secret() -> None:
    nodes = "amqp://u:p@rabbit-0:5672/,amqp://u:p@rabbit-1:5672/"
    manifests = render("--set", f"connections.amqpUrls={nodes.replace(',', chr(92) + ',')}")
    [secret] = [m for m in manifests if m["kind"] == "Secret"
                and m["metadata"]["name"].endswith("-connections")]
    assert base64.b64decode(secret["data"]["amqp-urls"]).decode() == nodes
    for deployment in deployments(manifests).values():
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]
               ["env"]}
        assert env["HH_AMQP_URLS"]["valueFrom"]["secretKeyRef"]["key"] == "amqp-urls"
    plain = render()
    assert not any("amqp-urls" in (m.get("data") or {}) for m in plain if m["kind"] == "Secret")


def test_keda_replaces_the_worker_hpa_and_monitoring_objects_carry_the_tested_rules() -> None:
    manifests = render("--set", "keda.enabled=true", "--set", "serviceMonitor.enabled=true",
                       "--set", "prometheusRule.enabled=true", "--set", "dashboard.enabled=true")
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    assert ("HorizontalPodAutoscaler", "hh-hh-callbacks-worker") not in by_kind
    assert ("HorizontalPodAutoscaler", "hh-hh-callbacks-ingest") in by_kind
    scaled = by_kind[("ScaledObject", "hh-hh-callbacks-worker")]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "hh.callbacks.process"
    assert trigger["metadata"]["mode"] == "QueueLength"
    auth = by_kind[("TriggerAuthentication", "hh-hh-callbacks-rabbitmq")]
    assert auth["spec"]["secretTargetRef"][0]["key"] == "amqp-url"
    assert "replicas" not in deployments(manifests)["worker"]["spec"]

    rule = by_kind[("PrometheusRule", "hh-hh-callbacks")]
    tested = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"]["groups"] == tested["groups"]
    monitor = by_kind[("ServiceMonitor", "hh-hh-callbacks")]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    dashboard = by_kind[("ConfigMap", "hh-hh-callbacks-dashboard")]
    assert json.loads(dashboard["data"]["hh-callbacks.json"])["uid"] == "hh-callbacks"


def test_the_console_is_optional_and_needs_a_way_to_sign_in() -> None:
    assert "console" not in deployments(render())
    refused = helm("template", "hh", str(CHART), *CONNECTIONS, "--set", "console.enabled=true")
    assert refused.returncode != 0 and "nobody could sign in" in refused.stderr
    manifests = render("--set", "console.enabled=true", "--set", "console.usersSecret=ops")
    console = deployments(manifests)["console"]
    pod = console["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["command"] == ["hh-console"]
    assert env["HH_CONSOLE_ENABLED"] == "true"
    assert env["HH_CONSOLE_USERS_FILE"] == "/etc/hh-callbacks/console-users.txt"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    sources = pod["volumes"][0]["projected"]["sources"]
    assert sources[-1]["secret"] == {"name": "ops", "items": [
        {"key": "users.txt", "path": "console-users.txt"}]}
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    assert services["hh-hh-callbacks-console"]["spec"]["type"] == "ClusterIP"


# podman kube play (podman 4.3, Debian 12) --------------------------------------------------

def for_podman(manifests: list[Manifest], projected: Path) -> tuple[list[Manifest],
                                                                     dict[str, bytes]]:
    """The rendered Deployments, adapted only where podman 4.3's kube play cannot follow
    Kubernetes; each adaptation does what the kubelet would have done:
    - host networking (`hostNetwork`), so the pods reach the local services on loopback; and
      no `ports` list, which podman 4.3 publishes on the host, refused with host networking;
    - the projected config volume (config.toml and the key files) is written out as the
      kubelet would project it, from the rendered ConfigMap and Secret, and mounted by
      hostPath (podman 4.3 knows only hostPath, configMap, emptyDir and PVC volumes);
    - Secrets read by `secretKeyRef` become podman secrets, which podman 4.3 reads as a JSON
      map of base64 values.
    Returns the manifests to play and the podman secrets to create."""
    config_maps = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ConfigMap"}
    secrets = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Secret"}
    projected.mkdir(mode=0o755)
    played = []
    for deployment in (m for m in manifests if m["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        pod["hostNetwork"] = True
        for container in pod["containers"]:
            container.pop("ports", None)
        for volume in pod["volumes"]:
            for source in volume.pop("projected")["sources"]:
                if "configMap" in source:
                    files = {k: v.encode() for k, v in
                             config_maps[source["configMap"]["name"]]["data"].items()}
                else:
                    files = {k: base64.b64decode(v) for k, v in
                             secrets[source["secret"]["name"]]["data"].items()}
                for name, content in files.items():
                    (projected / name).write_bytes(content)
                    (projected / name).chmod(0o644)  # the kubelet's 0440 with fsGroup 10001
            volume["hostPath"] = {"path": str(projected), "type": "Directory"}
        played.append(deployment)
    podman_secrets = {name: json.dumps(secret["data"]).encode()
                      for name, secret in secrets.items()}
    return played, podman_secrets


@pytest.fixture
async def kube_played(settings: Settings, tmp_path: Path, old_rsa_pem: bytes,
                      container_config: Callable[..., Path], amqp: Any,
                      ) -> AsyncIterator[tuple[int, int]]:
    """The chart's ingest and worker, rendered with the test's config and keys (given to the
    chart as values, as a user would) and played by podman; their ports."""
    ingest_port, worker_port = free_port(), free_port()
    source = container_config(ingest_port, worker_port)
    release = f"kp{uuid.uuid4().hex[:6]}"
    key_values = [arg for path in sorted(source.iterdir()) if path.name != "config.toml"
                  for arg in ("--set-file", f"keys.files.{path.name.replace('.', chr(92) + '.')}"
                                            f"={path}")]
    done = helm("template", release, str(CHART), *CONNECTIONS,
                "--set", f"image.repository={IMAGE.rsplit(':', 1)[0]}",
                "--set", f"image.tag={IMAGE.rsplit(':', 1)[1]}", "--set", "image.pullPolicy=Never",
                "--set", f"ingest.port={ingest_port}", "--set", f"worker.port={worker_port}",
                "--set", "ingest.drainSeconds=1",
                "--set-file", f"config={source / 'config.toml'}", *key_values)
    assert done.returncode == 0, done.stderr
    manifests = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    played, secrets = for_podman(manifests, tmp_path / "projected")
    for name, content in secrets.items():
        (tmp_path / f"{name}.json").write_bytes(content)
        await podman("secret", "create", name, str(tmp_path / f"{name}.json"))
    play_file = tmp_path / "play.yaml"
    play_file.write_text(yaml.safe_dump_all(played))
    try:
        await podman("kube", "play", str(play_file))
        yield ingest_port, worker_port
    finally:
        await podman("kube", "down", str(play_file), check=False)
        for name in secrets:
            await podman("secret", "rm", name, check=False)


async def test_rendered_ingest_and_worker_run_under_podman_kube_play_and_answer_an_alert(
    kube_played: tuple[int, int], events: EventTap,
) -> None:
    ingest_port, worker_port = kube_played
    base = f"http://127.0.0.1:{ingest_port}"
    async with aiohttp.ClientSession() as http:
        await wait_until(answers(http, f"{base}/readyz", 200), 60, "played ingest ready")
        await wait_until(answers(http, f"http://127.0.0.1:{worker_port}/healthz", 200), 60,
                         "played worker consuming")
        assert await post_alert(http, base, "kube-play-1") == 200
    [event] = await events.wait(1, timeout=30)
    assert (event["_routing_key"], event["payment_id"]) == ("order.success", "kube-play-1")
    # The pods run as the chart says: uid 10001, read-only root filesystem.
    listing = json.loads(await podman("ps", "--format", "json"))
    ours = [c["Names"][0] for c in listing if c["Names"][0].endswith(("-ingest", "-worker"))
            and c["Names"][0].startswith("kp")]
    assert len(ours) == 2, ours
    for name in ours:
        config = json.loads(await podman("inspect", name))[0]
        assert config["Config"]["User"].split(":")[0] == "10001"
        assert config["HostConfig"]["ReadonlyRootfs"] is True
