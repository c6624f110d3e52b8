package main

import (
	"strings"

	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
	"github.com/pkg/errors"
	"github.com/spf13/pflag"
)

// shareFlags make an image safe to share: commit and build take them.
type shareFlags struct {
	unsetEnv, unsetLabels, annotations []string
	omitHistory                        bool
}

func addShareFlags(fl *pflag.FlagSet, f *shareFlags) {
	fl.StringArrayVar(&f.unsetEnv, "unset-env", nil, "leave out of the image's config the environment variables whose names match PATTERN (repeatable; AWS_* for every AWS_ variable)")
	fl.StringArrayVar(&f.unsetLabels, "unset-label", nil, "leave out of the image's config the labels whose names match PATTERN (repeatable)")
	fl.StringArrayVar(&f.annotations, "annotation", nil, "add an annotation KEY=VALUE to the image manifest, and to the index when there is one (repeatable)")
	fl.BoolVar(&f.omitHistory, "omit-history", false, "leave the image's history one blank entry per layer: no commands, authors, comments or times of its own")
}

// parse checks the flags and returns the annotations by key.
func (f *shareFlags) parse() (map[string]string, error) {
	if err := imageconfig.CheckPatterns("--unset-env", f.unsetEnv); err != nil {
		return nil, err
	}
	if err := imageconfig.CheckPatterns("--unset-label", f.unsetLabels); err != nil {
		return nil, err
	}
	var out map[string]string
	for _, a := range f.annotations {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, errors.Errorf("--annotation %q: want KEY=VALUE", a)
		}
		if err := frontend.CheckAnnotation(k); err != nil {
			return nil, errors.Wrapf(err, "--annotation %q", a)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

// apply adds the flags to the frontend's options.
func (f *shareFlags) apply(o *frontend.Options) error {
	as, err := f.parse()
	if err != nil {
		return err
	}
	o.UnsetEnv = append(o.UnsetEnv, f.unsetEnv...)
	o.UnsetLabels = append(o.UnsetLabels, f.unsetLabels...)
	for k, v := range as {
		if o.Annotations == nil {
			o.Annotations = map[string]string{}
		}
		o.Annotations[k] = v
	}
	o.OmitHistory = o.OmitHistory || f.omitHistory
	return nil
}
