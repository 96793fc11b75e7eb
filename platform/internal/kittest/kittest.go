// Package kittest is a small real service, served by the kit's tests through
// the production server path, that exercises every slot of the interceptor
// chain and the mutation helper from the outside.
package kittest

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/auth"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/store"
)

// bucketValues holds "<tenant>/<key>" → "<revision> <value>".
var bucketValues = store.Bucket("kittest.values")

// Schema is the service's storage schema.
var Schema = store.Schema{Service: "kittest", Version: 1, Buckets: []store.Bucket{bucketValues}}

// Service implements KitTestService.
type Service struct {
	kittestv1.UnimplementedKitTestServiceServer
	db      *store.DB
	mutator *mutation.Mutator
}

// New returns the service over db.
func New(db *store.DB, mutator *mutation.Mutator) *Service {
	return &Service{db: db, mutator: mutator}
}

// Noop implements KitTestService.
func (*Service) Noop(context.Context, *kittestv1.NoopRequest) (*kittestv1.NoopResponse, error) {
	return &kittestv1.NoopResponse{}, nil
}

// Whoami implements KitTestService.
func (*Service) Whoami(ctx context.Context, _ *kittestv1.WhoamiRequest) (*kittestv1.WhoamiResponse, error) {
	id, _ := auth.FromContext(ctx)
	return &kittestv1.WhoamiResponse{Identity: id.Name}, nil
}

// Put implements KitTestService.
func (s *Service) Put(ctx context.Context, req *kittestv1.PutRequest) (*kittestv1.PutResponse, error) {
	return mutation.Apply(ctx, s.mutator, req, func(tx *bolt.Tx) (*kittestv1.PutResponse, error) {
		b := store.BucketTx(tx, bucketValues)
		rev, err := b.NextSequence()
		if err != nil {
			return nil, err
		}
		if err := b.Put([]byte(req.TenantId+"/"+req.Key), []byte(strconv.FormatUint(rev, 10)+" "+req.Value)); err != nil {
			return nil, err
		}
		return &kittestv1.PutResponse{Revision: rev}, nil
	})
}

// Get implements KitTestService.
func (s *Service) Get(_ context.Context, req *kittestv1.GetRequest) (*kittestv1.GetResponse, error) {
	var resp *kittestv1.GetResponse
	err := s.db.View(func(tx *bolt.Tx) error {
		v := store.BucketTx(tx, bucketValues).Get([]byte(req.TenantId + "/" + req.Key))
		if v == nil {
			return apierror.NotFound("key", req.Key)
		}
		revText, value, _ := strings.Cut(string(v), " ")
		rev, err := strconv.ParseUint(revText, 10, 64)
		if err != nil {
			return err
		}
		resp = &kittestv1.GetResponse{Value: value, Revision: rev}
		return nil
	})
	return resp, err
}

// Touch implements KitTestService: a mutation without state of its own.
func (*Service) Touch(context.Context, *kittestv1.TouchRequest) (*kittestv1.TouchResponse, error) {
	return &kittestv1.TouchResponse{}, nil
}

// Fail implements KitTestService: an untyped error whose text must not
// reach the caller.
func (*Service) Fail(_ context.Context, req *kittestv1.FailRequest) (*kittestv1.FailResponse, error) {
	return nil, errors.New("storage failed: " + req.SecretDetail)
}

// Panic implements KitTestService.
func (*Service) Panic(context.Context, *kittestv1.PanicRequest) (*kittestv1.PanicResponse, error) {
	panic("kittest: deliberate panic")
}

// Echo implements KitTestService.
func (*Service) Echo(_ context.Context, req *kittestv1.EchoRequest) (*kittestv1.EchoResponse, error) {
	return &kittestv1.EchoResponse{Received: req}, nil
}

// List implements KitTestService.
func (s *Service) List(req *kittestv1.ListRequest, stream kittestv1.KitTestService_ListServer) error {
	prefix := []byte(req.TenantId + "/")
	var keys []string
	err := s.db.View(func(tx *bolt.Tx) error {
		c := store.BucketTx(tx, bucketValues).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			keys = append(keys, string(k[len(prefix):]))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := stream.Send(&kittestv1.ListResponse{Key: k}); err != nil {
			return err
		}
	}
	return nil
}
