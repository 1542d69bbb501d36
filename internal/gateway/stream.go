package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// serverStream is a grpc.ServerStream over one HTTP request: it reads the
// requests from the body and writes the responses as lines.
type serverStream struct {
	ctx     context.Context
	g       *Gateway
	w       http.ResponseWriter
	rc      *http.ResponseController
	streams bool // the client streams (else one request)

	recvMu   sync.Mutex // RecvMsg may be called from another goroutine than SendMsg
	dec      *decoder
	received bool // the one request of a server-streaming call was read

	sendMu sync.Mutex
	wrote  bool  // the response's header was written
	broken error // a write failed: the client is gone
	done   bool  // the handler returned: the response is no longer ours
}

func newServerStream(ctx context.Context, g *Gateway, w http.ResponseWriter, rc *http.ResponseController, body io.Reader, clientStreams bool) *serverStream {
	return &serverStream{ctx: ctx, g: g, w: w, rc: rc, streams: clientStreams, dec: newDecoder(body, g.maxBody)}
}

func (s *serverStream) Context() context.Context { return s.ctx }

// Response metadata has no place in the gateway's answers (no Synod service
// sets any).
func (s *serverStream) SetHeader(metadata.MD) error  { return nil }
func (s *serverStream) SendHeader(metadata.MD) error { return nil }
func (s *serverStream) SetTrailer(metadata.MD)       {}

// RecvMsg reads the next request from the body: io.EOF at its end. The one
// request of a server-streaming call may be empty (an empty body).
func (s *serverStream) RecvMsg(m any) error {
	s.recvMu.Lock()
	defer s.recvMu.Unlock()
	if err := s.ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if !s.streams && s.received {
		return io.EOF
	}
	raw, err := s.dec.next()
	if errors.Is(err, io.EOF) {
		if s.streams {
			return io.EOF
		}
		raw = nil
	} else if err != nil {
		if cerr := s.ctx.Err(); cerr != nil {
			// The body broke because the call ended.
			return status.FromContextError(cerr).Err()
		}
		return err
	}
	s.received = true
	return s.g.decode(raw, m)
}

// SendMsg writes one response line, {"result": ...}, and flushes it.
func (s *serverStream) SendMsg(m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "gateway: response is %T, not a protobuf message", m)
	}
	b, err := marshal(msg)
	if err != nil {
		return status.Errorf(codes.Internal, "gateway: marshal response: %v", err)
	}
	line := make([]byte, 0, len(b)+len(`{"result":}`)+1)
	line = append(line, `{"result":`...)
	line = append(line, b...)
	line = append(line, "}\n"...)
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.done {
		return status.Error(codes.Canceled, "gateway: the call ended")
	}
	if err := s.ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if s.broken != nil {
		return s.broken
	}
	if !s.wrote {
		s.w.Header().Set("Content-Type", "application/json")
		s.w.WriteHeader(http.StatusOK)
		s.wrote = true
	}
	if _, err := s.w.Write(line); err != nil {
		s.broken = status.Errorf(codes.Unavailable, "gateway: write response: %v", err)
		return s.broken
	}
	if err := s.rc.Flush(); err != nil {
		s.broken = status.Errorf(codes.Unavailable, "gateway: flush response: %v", err)
		return s.broken
	}
	return nil
}

// finish ends the response once the handler returned err: an error goes
// out as a last line, {"error": <status>}, with the HTTP status of its code
// if nothing was sent before. A goroutine of the handler that sends later
// gets an error (the response writer must not be used after ServeHTTP).
func (s *serverStream) finish(err error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.done = true
	if err == nil || s.broken != nil {
		return
	}
	if s.ctx.Err() != nil {
		return // the client is gone, or the gateway closing
	}
	st := statusOf(err)
	body := errorBody(st)
	line := make([]byte, 0, len(body)+len(`{"error":}`)+1)
	line = append(line, `{"error":`...)
	line = append(line, body...)
	line = append(line, "}\n"...)
	if !s.wrote {
		s.w.Header().Set("Content-Type", "application/json")
		s.w.WriteHeader(HTTPStatus(st.Code()))
		s.wrote = true
	}
	_, _ = s.w.Write(line)
	_ = s.rc.Flush()
}
