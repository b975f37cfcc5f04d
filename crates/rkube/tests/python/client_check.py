"""The official Python `kubernetes` client against rkube server.

Run by tests/python_client.rs with the server's admin kubeconfig as the only argument; any
failed assertion or unexpected exception exits non-zero.
"""

import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def expect_status(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, f"expected {code}, got {e.status}: {e.body}"
        return e
    raise AssertionError(f"expected an ApiException with status {code}")


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    assert client.VersionApi().get_code().minor == "33"

    v1 = client.CoreV1Api()
    names = [ns.metadata.name for ns in v1.list_namespace().items]
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= set(names), names
    v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
    assert v1.read_namespace("py").status.phase == "Active"

    start = v1.list_namespaced_config_map("py").metadata.resource_version
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="app", labels={"tier": "front"}), data={"k": "v"})
    created = v1.create_namespaced_config_map("py", body)
    assert created.metadata.uid and created.metadata.resource_version
    assert v1.read_namespaced_config_map("app", "py").data == {"k": "v"}
    expect_status(409, v1.create_namespaced_config_map, "py", body)
    expect_status(404, v1.read_namespaced_config_map, "missing", "py")
    expect_status(404, v1.create_namespaced_config_map, "nope", body)
    bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name"))
    assert "is invalid" in expect_status(422, v1.create_namespaced_config_map, "py", bad).body

    for i in range(5):
        v1.create_namespaced_config_map(
            "py", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"page-{i}", labels={"tier": "back"}))
        )
    seen, token = [], None
    while True:
        page = v1.list_namespaced_config_map("py", limit=2, _continue=token)
        assert len(page.items) <= 2
        seen += [cm.metadata.name for cm in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == ["app"] + [f"page-{i}" for i in range(5)], seen
    front = v1.list_namespaced_config_map("py", label_selector="tier=front").items
    assert [cm.metadata.name for cm in front] == ["app"]

    # A list body is a JSON Patch; a dict body is a strategic merge patch.
    patch = [{"op": "replace", "path": "/data/k", "value": "patched"}]
    assert v1.patch_namespaced_config_map("app", "py", patch).data == {"k": "patched"}
    merged = v1.patch_namespaced_config_map("app", "py", {"data": {"extra": "x"}})
    assert merged.data == {"k": "patched", "extra": "x"}, merged.data
    v1.patch_namespaced_config_map("app", "py", {"data": {"extra": None}})

    replaced = v1.read_namespaced_config_map("app", "py")
    replaced.data = {"k": "replaced"}
    v1.replace_namespaced_config_map("app", "py", replaced)
    expect_status(409, v1.replace_namespaced_config_map, "app", "py", replaced)

    v1.delete_namespaced_config_map("app", "py")
    expect_status(404, v1.read_namespaced_config_map, "app", "py")

    # A watch from the start replays every change, in order.
    events = []
    stream = watch.Watch().stream(
        v1.list_namespaced_config_map, "py", resource_version=start, timeout_seconds=2
    )
    for event in stream:
        events.append((event["type"], event["object"].metadata.name))
    expected = (
        [("ADDED", "app")]
        + [("ADDED", f"page-{i}") for i in range(5)]
        + [("MODIFIED", "app")] * 4
        + [("DELETED", "app")]
    )
    assert events == expected, events

    workloads(v1, client.AppsV1Api())
    print("python client: all checks passed")


def workloads(v1, apps):
    """Deployments, their scale subresource, services and pods, through the typed APIs."""
    labels = {"app": "web"}
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]),
    )
    spec = client.V1DeploymentSpec(selector=client.V1LabelSelector(match_labels=labels), template=template)
    body = client.V1Deployment(metadata=client.V1ObjectMeta(name="web"), spec=spec)
    created = apps.create_namespaced_deployment("py", body)
    assert created.spec.replicas == 1 and created.spec.strategy.type == "RollingUpdate"
    assert created.metadata.generation == 1
    apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 3}})
    scale = apps.read_namespaced_deployment_scale("web", "py")
    assert scale.spec.replicas == 3 and scale.status.selector == "app=web", scale
    listed = apps.list_deployment_for_all_namespaces(label_selector="")
    assert [d.metadata.name for d in listed.items] == ["web"]

    service = client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector=labels, ports=[client.V1ServicePort(port=80)]),
    )
    created = v1.create_namespaced_service("py", service)
    assert created.spec.cluster_ip.startswith("10.43."), created.spec.cluster_ip
    assert created.spec.ports[0].target_port == 80
    bad = client.V1Service(metadata=client.V1ObjectMeta(name="bad"), spec=client.V1ServiceSpec(ports=[]))
    expect_status(422, v1.create_namespaced_service, "py", bad)

    pod = client.V1Pod(metadata=client.V1ObjectMeta(name="p", labels=labels), spec=template.spec)
    created = v1.create_namespaced_pod("py", pod)
    assert created.status.phase == "Pending" and created.spec.restart_policy == "Always"
    v1.delete_namespaced_pod("p", "py")
    expect_status(404, v1.read_namespaced_pod, "p", "py")


if __name__ == "__main__":
    main(sys.argv[1])
