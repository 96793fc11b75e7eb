package contract

import (
	"slices"
	"testing"
)

func TestCategorySyntaxAndCoverage(t *testing.T) {
	for id, want := range map[string]bool{
		"user": true, "user.contact.email": true, "user.contact_2": true,
		"": false, ".user": false, "user.": false, "user..email": false, "User": false, "user-contact": false,
	} {
		if got := ValidCategory(id); got != want {
			t.Errorf("ValidCategory(%q) = %v, want %v", id, got, want)
		}
	}
	for _, tc := range []struct {
		scope, category string
		want            bool
	}{
		{"user.contact", "user.contact.email", true},
		{"user.contact", "user.contact", true},
		{"user.contact", "user.contacts", false},
		{"user.contact.email", "user.contact", false},
		{"user.financial", "user.contact", false},
	} {
		if got := CategoryCovers(tc.scope, tc.category); got != tc.want {
			t.Errorf("CategoryCovers(%q, %q) = %v, want %v", tc.scope, tc.category, got, tc.want)
		}
	}
	if p := CategoryParent("user.contact.email"); p != "user.contact" {
		t.Errorf("CategoryParent = %q", p)
	}
	if p := CategoryParent("user"); p != "" {
		t.Errorf("CategoryParent of a root = %q", p)
	}
}

func TestCategoriesInScope(t *testing.T) {
	for _, tc := range []struct {
		categories, scope, want []string
	}{
		{[]string{"user.contact"}, nil, []string{"user.contact"}},
		{[]string{"user.contact.email"}, []string{"user.contact"}, []string{"user.contact.email"}},
		{[]string{"user.contact"}, []string{"user.contact.email", "user.contact.phone"}, []string{"user.contact.email", "user.contact.phone"}},
		{[]string{"user.contacts"}, []string{"user.contact"}, nil},
		{[]string{"user.contact", "user.contact.email"}, []string{"user.contact.email"}, []string{"user.contact.email"}},
	} {
		if got := CategoriesInScope(tc.categories, tc.scope); !slices.Equal(got, tc.want) {
			t.Errorf("CategoriesInScope(%v, %v) = %v, want %v", tc.categories, tc.scope, got, tc.want)
		}
	}
}
