package llb

import (
	"os"
	"strconv"
	"strings"

	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/pkg/errors"
)

// chownOpt turns a --chown value (user[:group], names or ids) into LLB's form.
func chownOpt(v string) *bkllb.ChownOpt {
	user, group, hasGroup := strings.Cut(v, ":")
	opt := &bkllb.ChownOpt{User: userOpt(user)}
	if hasGroup {
		opt.Group = userOpt(group)
	}
	return opt
}

func userOpt(v string) *bkllb.UserOpt {
	if id, err := strconv.Atoi(v); err == nil {
		return &bkllb.UserOpt{UID: id}
	}
	return &bkllb.UserOpt{Name: v}
}

// parseMode reads a --chmod value: octal, or symbolic as chmod(1) takes it.
func parseMode(v string) (*bkllb.ChmodOpt, error) {
	if m, err := strconv.ParseUint(v, 8, 32); err == nil {
		if m > 0o7777 {
			return nil, errors.Errorf("invalid --chmod=%s: mode out of range", v)
		}
		return &bkllb.ChmodOpt{Mode: os.FileMode(m)}, nil
	}
	if strings.ContainsAny(v, "ugoa+-=rwxXst,") {
		return &bkllb.ChmodOpt{ModeStr: v}, nil
	}
	return nil, errors.Errorf("invalid --chmod=%s: neither an octal nor a symbolic mode", v)
}
