package main

import (
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
)

// TestUsageListsEveryCommand: "lethe --help" names every top-level command
// and every subcommand of the operator groups, so that none is found only
// by reading the code.
func TestUsageListsEveryCommand(t *testing.T) {
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		if !strings.Contains(usage, "\n  "+name+" ") {
			t.Errorf("usage does not list the command %q", name)
		}
	}
	groups := map[string]map[string]func([]string, io.Writer, io.Writer) int{
		"consent": consentCommands, "dsar": dsarCommands, "retention": retentionCommands, "registry": registryCommands,
	}
	for group, subs := range groups {
		listed := usageEntry(t, group)
		for _, sub := range slices.Sorted(maps.Keys(subs)) {
			if !slices.Contains(listed, sub) {
				t.Errorf("usage lists %q for %q, not %q", listed, group, sub)
			}
		}
	}
}

// usageEntry returns the comma-separated subcommands the usage text lists
// for group, continuation lines included.
func usageEntry(t *testing.T, group string) []string {
	t.Helper()
	_, rest, ok := strings.Cut(usage, "\n  "+group+" ")
	if !ok {
		t.Fatalf("usage has no entry for %q", group)
	}
	var text strings.Builder
	for i, line := range strings.Split(rest, "\n") {
		// An entry continues on lines indented past the command column.
		if i > 0 && !strings.HasPrefix(line, "               ") {
			break
		}
		text.WriteString(strings.TrimSpace(line) + " ")
	}
	var subs []string
	for _, s := range strings.Split(text.String(), ",") {
		subs = append(subs, strings.TrimSpace(s))
	}
	return subs
}
