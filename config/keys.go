package config

import (
	"reflect"
	"sort"
	"strings"
)

// Keys lists every configuration key as a dotted path ("delivery.next_hop"),
// from the struct tags: the documentation test compares it with
// docs/configuration.md, so no key goes undocumented.
func Keys() []string {
	var out []string
	walkKeys(reflect.TypeOf(Config{}), "", &out)
	sort.Strings(out)
	return out
}

func walkKeys(t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if opts == "inline" {
			walkKeys(ft, prefix, out)
			continue
		}
		key := prefix + name
		if ft.Kind() == reflect.Struct && ft.String() != "time.Duration" {
			walkKeys(ft, key+".", out)
			continue
		}
		*out = append(*out, key)
	}
}
