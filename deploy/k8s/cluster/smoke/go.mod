module k8s-local/smoke

go 1.24
