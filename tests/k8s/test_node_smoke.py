import pytest
from tests.support.node import NodeCluster
from tests.support.cluster import wait_until

def test_smoke(k8s_node: NodeCluster, node_namespace: str) -> None:
    assert k8s_node.images is not None
    k8s_node.apply_yaml({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": {
        "restartPolicy": "Never",
        "containers": [{"name": "c", "image": k8s_node.images.objmig, "imagePullPolicy": "IfNotPresent",
          "command": ["python", "-c", "import os,urllib.request,ssl; print(os.environ['KUBERNETES_SERVICE_HOST']); c=ssl.create_default_context(cafile='/var/run/secrets/kubernetes.io/serviceaccount/ca.crt'); print(urllib.request.urlopen('https://10.0.0.1/version', context=c).read())"]}]}}, namespace=node_namespace)
    k8s_node.kubectl("wait", "-n", node_namespace, "--for=jsonpath={.status.phase}=Succeeded", "pod/t", "--timeout=60s", timeout=70)
    print(k8s_node.pod_log(node_namespace, "t"))
    print(k8s_node.kubectl("logs", "-n", node_namespace, "t").stdout)
