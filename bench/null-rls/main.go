// The null rate limit service: envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit
// on grpc-go, answering every call with the same pre-encoded RateLimitResponse
// {overall_code: OK}, without decoding the request. The least a Go rate limit service
// (envoyproxy/ratelimit included) pays per call: bench/envoy-direct.sh measures Weir's
// gRPC port against it.
//
// Built from Debian's packages only (golang-go, golang-google-grpc-dev), in GOPATH mode:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o null-rls bench/null-rls/main.go
//
// Usage: null-rls PORT (listens on 127.0.0.1:PORT).
package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// okResponse is RateLimitResponse{overall_code: OK}: field 1, varint 1.
var okResponse = []byte{0x08, 0x01}

// rawMessage carries a message's bytes through the codec untouched.
type rawMessage struct{ bytes []byte }

// rawCodec hands messages over as bytes: no protobuf types, no generated code.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return v.(*rawMessage).bytes, nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	v.(*rawMessage).bytes = data
	return nil
}
func (rawCodec) Name() string   { return "proto" }
func (rawCodec) String() string { return "proto" }

func shouldRateLimit(_ interface{}, _ context.Context, decode func(interface{}) error, _ grpc.UnaryServerInterceptor) (interface{}, error) {
	var request rawMessage
	if err := decode(&request); err != nil {
		return nil, err
	}
	return &rawMessage{bytes: okResponse}, nil
}

var service = grpc.ServiceDesc{
	ServiceName: "envoy.service.ratelimit.v3.RateLimitService",
	HandlerType: (*interface{})(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "ShouldRateLimit", Handler: shouldRateLimit}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    "envoy/service/ratelimit/v3/rls.proto",
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: null-rls PORT")
		os.Exit(2)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	encoding.RegisterCodec(rawCodec{})
	server := grpc.NewServer(grpc.CustomCodec(rawCodec{}))
	server.RegisterService(&service, struct{}{})
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
