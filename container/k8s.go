package container

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/pkg/errors"
)

// K8sPrefix names a Kubernetes container by its pod: k8s://NAMESPACE/POD[/CONTAINER].
const K8sPrefix = "k8s://"

// The labels the CRI plugin puts on kubelet's containers.
const (
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodName      = "io.kubernetes.pod.name"
	labelContainer    = "io.kubernetes.container.name"
	labelKind         = "io.cri-containerd.kind"
)

// k8sContainer finds the containerd ID of the container that
// k8s://NAMESPACE/POD[/CONTAINER] names, by the CRI labels, never a pod
// sandbox. CONTAINER may be left out when the pod has one container. Of
// several containers of the same name (restarts), a running one, else the
// newest, is taken.
func k8sContainer(ctx context.Context, cc *containerd.Client, spec string) (string, error) {
	parts := strings.Split(strings.TrimPrefix(spec, K8sPrefix), "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
		return "", errors.Errorf("%s: want %sNAMESPACE/POD[/CONTAINER]", spec, K8sPrefix)
	}
	ns, pod := parts[0], parts[1]
	inNS, err := cc.Containers(ctx, fmt.Sprintf(`labels.%q==%s`, labelPodNamespace, ns))
	if err != nil {
		return "", errors.Wrapf(err, "listing the containers of Kubernetes namespace %s", ns)
	}
	var cs []containerd.Container
	pods := map[string]bool{}
	for _, c := range inNS {
		l, err := c.Labels(ctx)
		if err != nil {
			return "", err
		}
		if l[labelKind] == "sandbox" {
			continue
		}
		pods[l[labelPodName]] = true
		if l[labelPodName] == pod {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		if len(pods) == 0 {
			return "", errors.Errorf("%s: no pod %s: Kubernetes namespace %s has no containers here (containerd namespace: the kubelet's is k8s.io)", spec, pod, ns)
		}
		return "", errors.Errorf("%s: no pod %s in Kubernetes namespace %s; its pods here: %s", spec, pod, ns, strings.Join(slices.Sorted(maps.Keys(pods)), ", "))
	}
	names := map[string][]containerd.Container{}
	for _, c := range cs {
		l, _ := c.Labels(ctx)
		names[l[labelContainer]] = append(names[l[labelContainer]], c)
	}
	var want string
	switch {
	case len(parts) == 3:
		want = parts[2]
		if _, ok := names[want]; !ok {
			return "", errors.Errorf("%s: pod %s/%s has no container %s; its containers: %s", spec, ns, pod, want, strings.Join(slices.Sorted(maps.Keys(names)), ", "))
		}
	case len(names) == 1:
		for n := range names {
			want = n
		}
	default:
		return "", errors.Errorf("%s: pod %s/%s has several containers, name one (%s%s/%s/CONTAINER): %s", spec, ns, pod, K8sPrefix, ns, pod, strings.Join(slices.Sorted(maps.Keys(names)), ", "))
	}
	return pickContainer(ctx, names[want])
}

// pickContainer takes a running container of cs, else the newest.
func pickContainer(ctx context.Context, cs []containerd.Container) (string, error) {
	var best containerd.Container
	var newest int64
	for _, c := range cs {
		if t, err := c.Task(ctx, nil); err == nil {
			if st, err := t.Status(ctx); err == nil && (st.Status == containerd.Running || st.Status == containerd.Paused) {
				return c.ID(), nil
			}
		} else if !errdefs.IsNotFound(err) {
			return "", err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return "", err
		}
		if best == nil || info.CreatedAt.UnixNano() > newest {
			best, newest = c, info.CreatedAt.UnixNano()
		}
	}
	return best.ID(), nil
}
