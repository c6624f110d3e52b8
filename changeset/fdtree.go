package changeset

import (
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// The container owns every name under the trees read here and may change
// them while they are read. So nothing is looked up by a host path: each
// entry is opened relative to its parent directory's descriptor with
// openat2, beneath it, following no symlink and crossing no mount, and
// only with O_PATH, which never opens a device or a fifo. What is read
// afterwards (stat, contents, xattrs, link target) is read from that
// descriptor, so it all describes the one inode the walk found.

// resolveFlags confine a lookup to the directory it starts from.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// errChanged reports an entry that changed while it was read.
var errChanged = errors.New("changed while being read")

// openRoot opens a tree's root directory, a host path the caller trusts.
func openRoot(p string) (*os.File, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// rootNode opens a tree's root as the node the walk starts from; close the
// file when done.
func rootNode(p string) (*os.File, *node, error) {
	f, err := openRoot(p)
	if err != nil {
		return nil, nil, err
	}
	n := &node{fd: int(f.Fd())}
	if err := unix.Fstat(n.fd, &n.st); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, n, nil
}

// node is one entry of a tree, held by an O_PATH descriptor.
type node struct {
	// rel is the path from the tree's root, slash-separated.
	rel string
	fd  int
	st  unix.Stat_t
}

func (n *node) close() {
	if n.fd >= 0 {
		unix.Close(n.fd)
		n.fd = -1
	}
}

func (n *node) isDir() bool     { return n.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (n *node) isReg() bool     { return n.st.Mode&unix.S_IFMT == unix.S_IFREG }
func (n *node) isSymlink() bool { return n.st.Mode&unix.S_IFMT == unix.S_IFLNK }
func (n *node) isSocket() bool  { return n.st.Mode&unix.S_IFMT == unix.S_IFSOCK }
func (n *node) isWhiteout() bool {
	return n.st.Mode&unix.S_IFMT == unix.S_IFCHR && n.st.Rdev == 0
}

// procPath names the inode behind fd itself, whatever happens to its name.
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// openNode opens name, relative to the directory dirfd, as a node.
func openNode(dirfd int, name, rel string) (*node, error) {
	fd, err := openBeneath(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}
	n := &node{rel: rel, fd: fd}
	if err := unix.Fstat(fd, &n.st); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// openBeneath is openat2 confined to dirfd's tree. A kernel without openat2
// gets the same guarantee one component at a time.
func openBeneath(dirfd int, name string, flags int) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags), Resolve: resolveFlags}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, name, &how)
		switch {
		case err == nil:
			return fd, nil
		case (err == unix.EAGAIN || err == unix.EINTR) && i < 100:
			continue
		case err == unix.ENOSYS:
			return openByComponents(dirfd, name, flags)
		case err == unix.ELOOP || err == unix.EXDEV:
			// A symlink or a mount point where the walk saw a file.
			return -1, errChanged
		default:
			return -1, err
		}
	}
}

func openByComponents(dirfd int, name string, flags int) (int, error) {
	parts := strings.Split(name, "/")
	if slices.Contains(parts, "..") {
		return -1, unix.EINVAL
	}
	cur := dirfd
	for i, p := range parts {
		f := unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_DIRECTORY
		if i == len(parts)-1 {
			f = flags
		}
		fd, err := unix.Openat(cur, p, f, 0)
		if cur != dirfd {
			unix.Close(cur)
		}
		if err == unix.ENOTDIR || err == unix.ELOOP {
			return -1, errChanged
		}
		if err != nil {
			return -1, err
		}
		cur = fd
	}
	return cur, nil
}

// reopen opens the inode behind n for reading (through /proc, which names
// the inode, not a path) and checks it is still what n's stat says.
func (n *node) reopen(flags int) (*os.File, error) {
	fd, err := unix.Open(procPath(n.fd), flags|unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Dev != n.st.Dev || st.Ino != n.st.Ino || st.Mode&unix.S_IFMT != n.st.Mode&unix.S_IFMT {
		unix.Close(fd)
		return nil, errChanged
	}
	return os.NewFile(uintptr(fd), n.rel), nil
}

// names lists a directory node's entries, sorted.
func (n *node) names() ([]string, error) {
	f, err := n.reopen(unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// readlink returns a symlink node's target.
func (n *node) readlink() (string, error) {
	for sz := 256; ; sz *= 2 {
		buf := make([]byte, sz)
		k, err := unix.Readlinkat(n.fd, "", buf)
		if err != nil {
			return "", err
		}
		if k < sz {
			return string(buf[:k]), nil
		}
	}
}

// xattrs returns the extended attributes of a regular file or directory
// node; other kinds carry none a layer keeps, and are never opened.
func (n *node) xattrs() (map[string]string, error) {
	if !n.isReg() && !n.isDir() {
		return nil, nil
	}
	p := procPath(n.fd)
	sz, err := unix.Listxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		return nil, errors.Wrap(err, "listing xattrs")
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Listxattr(p, buf); err != nil {
		return nil, errors.Wrap(err, "listing xattrs")
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		v, err := getxattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, errors.Wrapf(err, "reading xattr %q", name)
		}
		out[name] = v
	}
	return out, nil
}

func getxattr(p, name string) (string, error) {
	for {
		sz, err := unix.Getxattr(p, name, nil)
		if err != nil {
			return "", err
		}
		buf := make([]byte, sz)
		k, err := unix.Getxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:k]), nil
	}
}

// joinRel joins a relative path and a name.
func joinRel(rel, name string) string {
	if rel == "" {
		return name
	}
	return rel + "/" + name
}
