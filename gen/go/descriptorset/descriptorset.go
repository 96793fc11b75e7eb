// Package descriptorset holds Lethe's API descriptors with their comments,
// for servers that describe the API to callers (gRPC reflection, as
// grpcurl describe uses it).
//
// The descriptors protoc-gen-go compiles into the generated packages drop
// the protos' comments. lethe.binpb is the same files as `buf build` makes
// them, source information included and imports left out; `make generate`
// writes it beside the generated code and `make check-generate` checks it.
package descriptorset

import (
	_ "embed"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

//go:embed lethe.binpb
var encoded []byte

// Files returns Lethe's files (proto/lethe/...) with their comments. An
// import outside them (the well-known types, protovalidate's rules) is
// resolved from the files linked into the program, which the generated
// packages register.
var Files = sync.OnceValues(func() (*protoregistry.Files, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(encoded, &set); err != nil {
		return nil, fmt.Errorf("descriptorset: %w", err)
	}
	files := new(protoregistry.Files)
	resolver := chain{files, protoregistry.GlobalFiles}
	// buf writes a file after the files it imports.
	for _, fdp := range set.GetFile() {
		fd, err := protodesc.NewFile(fdp, resolver)
		if err != nil {
			return nil, fmt.Errorf("descriptorset: %s: %w", fdp.GetName(), err)
		}
		if err := files.RegisterFile(fd); err != nil {
			return nil, fmt.Errorf("descriptorset: %s: %w", fdp.GetName(), err)
		}
	}
	return files, nil
})

// Resolver finds a descriptor among Lethe's commented files first and among
// the program's registered files after, so that every service a server
// hosts (health, reflection, test services) is still found.
func Resolver() (protodesc.Resolver, error) {
	files, err := Files()
	if err != nil {
		return nil, err
	}
	return chain{files, protoregistry.GlobalFiles}, nil
}

// chain asks each resolver in turn.
type chain []protodesc.Resolver

func (c chain) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	for _, r := range c {
		if fd, err := r.FindFileByPath(path); err == nil {
			return fd, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", path, protoregistry.NotFound)
}

func (c chain) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	for _, r := range c {
		if d, err := r.FindDescriptorByName(name); err == nil {
			return d, nil
		}
	}
	return nil, fmt.Errorf("%s: %w", name, protoregistry.NotFound)
}
