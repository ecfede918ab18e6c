pytest_plugins = ["tests.support.kube_fixtures"]
