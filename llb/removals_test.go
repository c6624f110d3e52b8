package llb

import (
	"context"
	"fmt"
	"testing"

	"github.com/commit-frontend/commit-frontend/changeset"
	bkllb "github.com/moby/buildkit/client/llb"
)

// TestRemovalBudget: the most removals a change set may hold
// (changeset.MaxRemovalBytes, each costing its path plus
// changeset.RemovalOverhead) fit in one LLB definition under BuildKit's 16
// MiB message limit.
func TestRemovalBudget(t *testing.T) {
	for _, pathLen := range []int{8, 40, 200} {
		t.Run(fmt.Sprint(pathLen), func(t *testing.T) {
			n := changeset.MaxRemovalBytes / (pathLen + changeset.RemovalOverhead)
			src := &CommitSource{Kind: ChangeSet, State: bkllb.Local("rootfs"), TarPath: "/changes.tar", Entries: 1}
			for i := 0; i < n; i++ {
				p := fmt.Sprintf("%0*d", pathLen, i)
				src.Deletions = append(src.Deletions, p[:pathLen])
			}
			st := bkllb.Scratch().File(ChangeSetAction(src))
			def, err := st.Marshal(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			size := 0
			for _, d := range def.Def {
				size += len(d)
			}
			per := float64(size)/float64(n) - float64(pathLen+1)
			t.Logf("%d removals of %d-byte paths: %d bytes of LLB, %.1f bytes each besides the path", n, pathLen, size, per)
			if size >= 16<<20-(1<<20) {
				t.Errorf("%d bytes of LLB: too close to BuildKit's 16 MiB limit", size)
			}
			if per > changeset.RemovalOverhead {
				t.Errorf("a removal costs %.1f bytes besides its path, more than changeset.RemovalOverhead (%d)", per, changeset.RemovalOverhead)
			}
		})
	}
}
