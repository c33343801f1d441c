package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
)

// --allow-host takes hosts one per flag, several in one value, or none in an
// empty one: the forms the .mcpb bundle's user_config produces
// (examples/mcpb/manifest.json).
func TestAllowHostForms(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, nil},
		{[]string{"--allow-host="}, nil},
		{[]string{"--allow-host", "api.example.com"}, []string{"api.example.com"}},
		{[]string{"--allow-host=a.example.com, *.b.example.com:8443", "--allow-host", "c.example.com"}, []string{"a.example.com", "*.b.example.com:8443", "c.example.com"}},
		{[]string{"--allow-host=a.example.com b.example.com,,"}, []string{"a.example.com", "b.example.com"}},
	} {
		var o runOptions
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		o.addFlags(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if diff := cmp.Diff(tc.want, o.allowHosts); diff != "" {
			t.Errorf("%q: allow hosts (-want +got):\n%s", tc.args, diff)
		}
	}
}
