package testcluster

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

func TestPeerCallsTakeLinkFaults(t *testing.T) {
	n := newNetwork(rand.New(rand.NewPCG(1, 1)))
	n.setAddr("127.0.0.1:1", 1)
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	calls := 0
	invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		calls++
		return nil
	}
	call := n.unaryInterceptor(0) // from node 0 to node 1
	if err := call(t.Context(), "/m", nil, nil, cc, invoker); err != nil || calls != 1 {
		t.Fatalf("healthy link: got %v after %d calls, want success after 1", err, calls)
	}
	n.update(func(links map[[2]int]LinkFaults) { links[[2]int{0, 1}] = LinkFaults{Cut: true} })
	err = call(t.Context(), "/m", nil, nil, cc, invoker)
	if status.Code(err) != codes.Unavailable || calls != 1 {
		t.Fatalf("cut link: got %v after %d calls, want Unavailable without a call", err, calls)
	}
	// Node 1 calling the same address uses another link, a healthy one.
	if err := n.unaryInterceptor(1)(t.Context(), "/m", nil, nil, cc, invoker); err != nil {
		t.Fatalf("call of node 1 over its own, healthy link: %v", err)
	}
	n.update(func(links map[[2]int]LinkFaults) { links[[2]int{0, 1}] = LinkFaults{Delay: 30 * time.Millisecond} })
	start := time.Now()
	if err := call(t.Context(), "/m", nil, nil, cc, invoker); err != nil {
		t.Fatalf("slow link: %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("call over a link delayed 30ms: took %s", d)
	}
}
