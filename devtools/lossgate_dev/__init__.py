"""Development-only tools of lossgate: the local control plane and Prometheus the tests start
(`devenv`) and the `make demo` rollouts (`demo`). Never shipped in the lossgate wheel or image."""
