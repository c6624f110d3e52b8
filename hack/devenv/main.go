// Command devenv starts a private registry, buildkitd and containerd under one
// directory, builds the busybox base image, writes the addresses as shell
// variables to DIR/env, and keeps them running until it is interrupted.
// With -containerd-only it starts containerd alone and makes the base image
// with BuildKit's engine in this process (package engine): no buildkitd, no
// registry (CF_BASE_IMAGE, CF_REGISTRY and BUILDKIT_HOST are then unset).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/commit-frontend/commit-frontend/engine"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/commit-frontend/commit-frontend/internal/testenv"
)

func main() {
	dir := flag.String("dir", "", "directory for the daemons' state (default: a new temp dir)")
	debug := flag.String("buildkitd-debugaddr", "", "serve buildkitd's pprof on this address (e.g. 127.0.0.1:6060)")
	containerdOnly := flag.Bool("containerd-only", false, "start containerd alone; the base image is made by BuildKit's engine in this process")
	flag.Parse()
	run := run
	if *containerdOnly {
		run = func(dir, _ string) error { return runContainerdOnly(dir) }
	}
	if err := run(*dir, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "devenv:", err)
		os.Exit(1)
	}
}

func run(dir, debugAddr string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := envDir(dir)
	if err != nil {
		return err
	}
	reg, err := testenv.StartRegistry(dir)
	if err != nil {
		return err
	}
	defer reg.Stop()
	ctrd, err := testenv.StartContainerd(ctx, dir)
	if err != nil {
		return err
	}
	defer ctrd.Stop()
	bk, err := testenv.StartBuildkitd(ctx, dir, testenv.BuildkitdOpt{InsecureRegistries: []string{reg.Host}, DebugAddr: debugAddr})
	if err != nil {
		return err
	}
	defer bk.Stop()
	c, err := solve.Connect(ctx, bk.Addr)
	if err != nil {
		return err
	}
	img, err := testenv.BuildBusybox(ctx, c, dir, reg.Host)
	c.Close()
	if err != nil {
		return err
	}
	env := fmt.Sprintf("BUILDKIT_HOST=%s\nCONTAINERD_ADDRESS=%s\nCF_REGISTRY=%s\nCF_BASE_IMAGE=%s\nCF_BASE_TAR=%s\nCF_BASE_LAYOUT=%s\nCF_ENV_DIR=%s\n",
		bk.Addr, ctrd.Addr, reg.Host, img.Ref, img.Tar, img.Layout, dir)
	if err := writeEnv(dir, env); err != nil {
		return err
	}
	fmt.Print(env)
	<-ctx.Done()
	return nil
}

// runContainerdOnly starts containerd, makes the base image with the engine
// (its state in DIR/engine, its records in a namespace of its own), and
// keeps containerd running.
func runContainerdOnly(dir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := envDir(dir)
	if err != nil {
		return err
	}
	ctrd, err := testenv.StartContainerd(ctx, dir)
	if err != nil {
		return err
	}
	defer ctrd.Stop()
	e, err := engine.Start(ctx, engine.Options{Root: filepath.Join(dir, "engine"), Address: ctrd.Addr, Namespace: "devenv"})
	if err != nil {
		return err
	}
	img, err := testenv.BuildBusybox(ctx, e.Client(), dir, "")
	if cerr := e.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	env := fmt.Sprintf("CONTAINERD_ADDRESS=%s\nCF_BASE_TAR=%s\nCF_BASE_LAYOUT=%s\nCF_ENV_DIR=%s\n", ctrd.Addr, img.Tar, img.Layout, dir)
	if err := writeEnv(dir, env); err != nil {
		return err
	}
	fmt.Print(env)
	<-ctx.Done()
	return nil
}

// writeEnv writes the shell variables to DIR/env, whole or not at all.
func writeEnv(dir, env string) error {
	envFile := filepath.Join(dir, "env")
	if err := os.WriteFile(envFile+".tmp", []byte(env), 0o644); err != nil {
		return err
	}
	return os.Rename(envFile+".tmp", envFile)
}

// envDir makes the environment's directory: dir, or a new temporary one.
func envDir(dir string) (string, error) {
	if dir == "" {
		return os.MkdirTemp("", "commit-frontend-env-")
	}
	return dir, os.MkdirAll(dir, 0o700)
}
