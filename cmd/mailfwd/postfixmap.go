package main

import (
	"log/slog"

	"mailfwd/routing"
)

// postfixMapSource reads a Postfix ldap_table(5) file unchanged and warns
// about the settings Postfix itself ignores.
func postfixMapSource(path string, log *slog.Logger) (routing.Source, error) {
	m, err := routing.ParsePostfixMap(path)
	if err != nil {
		return nil, err
	}
	return m.Source(log)
}
