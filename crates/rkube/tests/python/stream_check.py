"""The official Python `kubernetes` client's exec and port-forward against a pod on rkube.

Run by tests/node_agent.rs with the server's admin kubeconfig, a namespace and the name of a
running pod whose container serves HTTP on port 8080; any failed assertion or unexpected
exception exits non-zero.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def main(kubeconfig, namespace, pod):
    config.load_kube_config(config_file=kubeconfig)
    v1 = client.CoreV1Api()

    # A command's output, as one string (WebSocket v4.channel.k8s.io).
    out = stream(v1.connect_get_namespaced_pod_exec, pod, namespace,
                 command=["sh", "-c", "echo from-python; echo to-stderr >&2"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    assert "from-python" in out, out

    # Interactive: stdin in, stdout and the exit code out.
    resp = stream(v1.connect_get_namespaced_pod_exec, pod, namespace,
                  command=["sh", "-c", "read line; echo got-$line; exit 4"],
                  stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    resp.write_stdin("hello\n")
    resp.run_forever(timeout=20)
    out = resp.read_stdout(timeout=5)
    assert "got-hello" in out, out
    assert resp.returncode == 4, resp.returncode
    resp.close()

    # Port-forward (WebSocket portforward protocol): an HTTP request to the pod's port 8080.
    pf = portforward(v1.connect_get_namespaced_pod_portforward, pod, namespace, ports="8080")
    sock = pf.socket(8080)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert b"200" in data.split(b"\r\n", 1)[0], data[:200]
    assert b"hello-from-pod" in data, data[:400]
    assert pf.error(8080) is None, pf.error(8080)
    pf.close()
    print("python exec and port-forward ok")


if __name__ == "__main__":
    main(*sys.argv[1:4])
