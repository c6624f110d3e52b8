package solve

import (
	"context"
	"net"

	"github.com/moby/buildkit/client"
	dockerclient "github.com/moby/moby/client"
)

// ConnectDocker returns a client of the BuildKit inside dockerd, reached
// through the Engine API as buildx's docker driver reaches it: gRPC over a
// hijacked POST /grpc, the session over POST /session.
func ConnectDocker(ctx context.Context, dc *dockerclient.Client) (*client.Client, error) {
	return client.New(ctx, "",
		client.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			return dc.DialHijack(ctx, "/grpc", "h2c", nil)
		}),
		client.WithSessionDialer(func(ctx context.Context, proto string, meta map[string][]string) (net.Conn, error) {
			return dc.DialHijack(ctx, "/session", proto, meta)
		}))
}
