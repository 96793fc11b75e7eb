package main

import (
	"slices"
	"strings"
	"testing"

	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// TestReflectionServesTheProtosComments: what `grpcurl describe` reads from
// a running platform carries the documentation written in the protos.
func TestReflectionServesTheProtosComments(t *testing.T) {
	p := sharedPlatform(t)
	stream, err := reflectionpb.NewServerReflectionClient(p.conn).ServerReflectionInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "lethe.consent.v1.ConsentService"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var file *descriptorpb.FileDescriptorProto
	for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		fdp := &descriptorpb.FileDescriptorProto{}
		if err := proto.Unmarshal(raw, fdp); err != nil {
			t.Fatal(err)
		}
		if fdp.GetName() == "lethe/consent/v1/consent.proto" {
			file = fdp
		}
	}
	if file == nil {
		t.Fatalf("reflection did not answer with consent.proto: %v", resp)
	}
	// The path of a method: service (6) i, method (2) j.
	svc := slices.IndexFunc(file.GetService(), func(s *descriptorpb.ServiceDescriptorProto) bool { return s.GetName() == "ConsentService" })
	method := slices.IndexFunc(file.GetService()[svc].GetMethod(), func(m *descriptorpb.MethodDescriptorProto) bool { return m.GetName() == "Check" })
	for _, loc := range file.GetSourceCodeInfo().GetLocation() {
		if slices.Equal(loc.GetPath(), []int32{6, int32(svc), 2, int32(method)}) {
			if !strings.Contains(loc.GetLeadingComments(), "decides whether a subject's data may be processed") {
				t.Errorf("Check's comment over reflection = %q", loc.GetLeadingComments())
			}
			return
		}
	}
	t.Errorf("reflection serves consent.proto without its comments (%d source locations)", len(file.GetSourceCodeInfo().GetLocation()))
}
