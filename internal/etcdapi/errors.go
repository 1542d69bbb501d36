package etcdapi

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func rpcUnimplemented(what string) error {
	return status.Errorf(codes.Unimplemented, "%s is not implemented yet", what)
}
