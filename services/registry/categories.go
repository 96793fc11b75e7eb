package registry

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
	"github.com/lethe-privacy/lethe/services/registry/internal/taxonomy"
)

// DefineCategory implements RegistryService.
func (s *Service) DefineCategory(ctx context.Context, req *registryv1.DefineCategoryRequest) (*registryv1.DefineCategoryResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.DefineCategoryResponse, error) {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		tax, err := taxonomyTx(tx, req.TenantId)
		if err != nil {
			return nil, err
		}
		// A category under a sensitive parent is sensitive, whatever the
		// request says.
		// Provenance is inherited likewise when the request states none.
		c, err := tax.Extension(taxonomy.Category{ID: req.Category.Id, Name: req.Category.Name, Description: req.Category.Description,
			Sensitive: req.Category.Sensitive, Provenance: req.Category.Provenance})
		var fe *taxonomy.FieldError
		switch {
		case errors.Is(err, taxonomy.ErrAlreadyDefined):
			return nil, apierror.AlreadyExists("category", req.Category.Id)
		case errors.As(err, &fe):
			return nil, apierror.Invalid(fe.Field, fe.Description)
		case err != nil:
			return nil, err
		}
		stored := &registryv1.Category{Id: c.ID, Name: c.Name, Description: c.Description, Sensitive: c.Sensitive, Provenance: c.Provenance}
		if err := storage.PutCategoryTx(tx, req.TenantId, stored); err != nil {
			return nil, err
		}
		return &registryv1.DefineCategoryResponse{Category: stored}, nil
	})
}

// ListCategories implements RegistryService.
func (s *Service) ListCategories(_ context.Context, req *registryv1.ListCategoriesRequest) (*registryv1.ListCategoriesResponse, error) {
	var all []taxonomy.Category
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		tax, err := taxonomyTx(tx, req.TenantId)
		if err != nil {
			return err
		}
		all = tax.All()
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(all))
	for i, c := range all {
		ids[i] = c.ID
	}
	start, end, next, err := paging.Slice(ids, req, req.TenantId)
	if err != nil {
		return nil, err
	}
	resp := &registryv1.ListCategoriesResponse{NextPageToken: next}
	for _, c := range all[start:end] {
		resp.Categories = append(resp.Categories, &registryv1.Category{
			Id: c.ID, Name: c.Name, Description: c.Description, Sensitive: c.Sensitive, BuiltIn: c.BuiltIn, Provenance: c.Provenance,
		})
	}
	return resp, nil
}

// taxonomyTx returns the taxonomy a tenant sees.
func taxonomyTx(tx *bolt.Tx, tenant string) (*taxonomy.Taxonomy, error) {
	own, err := storage.CategoriesTx(tx, tenant)
	if err != nil {
		return nil, err
	}
	ext := make([]taxonomy.Category, 0, len(own))
	for _, c := range own {
		ext = append(ext, taxonomy.Category{ID: c.Id, Name: c.Name, Description: c.Description, Sensitive: c.Sensitive, Provenance: c.Provenance})
	}
	return taxonomy.New(ext)
}

// unknownCategories names, as field violations under field, the
// categories the tenant's taxonomy does not know.
func unknownCategories(tax *taxonomy.Taxonomy, cats []*commonv1.DataCategory, field string) []apierror.FieldViolation {
	var v []apierror.FieldViolation
	for i, c := range cats {
		if !tax.Known(c.GetId()) {
			v = append(v, apierror.FieldViolation{
				Field:       fmt.Sprintf("%s[%d].id", field, i),
				Description: fmt.Sprintf("unknown data category %q: define it first (DefineCategory) or use a built-in one", c.GetId()),
			})
		}
	}
	return v
}
