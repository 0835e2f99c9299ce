package main

import (
	"log/slog"

	"mailfwd/config"
	"mailfwd/routing"
	"mailfwd/routing/directory"
)

// postfixMapSource reads a Postfix ldap_table(5) file unchanged and warns
// about the settings Postfix itself ignores. A .cf file has no pool size
// (each Postfix process holds one connection per map): it gets
// directory.ldap's default.
func postfixMapSource(path string, log *slog.Logger) (routing.Source, error) {
	m, err := directory.ParsePostfixMap(path)
	if err != nil {
		return nil, err
	}
	m.Config.PoolSize = config.Defaults().Directory.LDAP.PoolSize
	return m.Source(log)
}
