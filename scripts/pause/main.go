// pause: the process that holds a pod's namespaces open, for the test node's sandbox image.
//
// registry.k8s.io is not reachable from here, so the image Kubernetes calls "pause" is built
// from this file (scripts/image.sh). It does what the upstream C pause does: wait for a
// termination signal and exit 0, and reap the zombies it inherits as PID 1 of a pod that
// shares its process namespace.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
