package container

import "testing"

func TestSanitize(t *testing.T) {
	if got := Sanitize("K8s.io/Pod_1"); got != "k8s-io-pod-1" {
		t.Errorf("Sanitize: %q", got)
	}
}
