// etcd for the end-to-end tests: the etcd server's own entry point, built
// at the version of the etcd client that k8s.io/kubernetes uses.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
