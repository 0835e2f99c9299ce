#!/bin/sh
# One-shot: load the seed directory and the bind user's ACI into the dirsrv
# service (idempotent: an existing entry is not an error).
set -eu
url=ldap://dirsrv:3389
for i in $(seq 1 60); do
    ldapsearch -x -H "$url" -b '' -s base -LLL 1.1 >/dev/null 2>&1 && break
    sleep 2
done
# The suffix's backend: the container creates it when DS_SUFFIX_NAME is set.
ldapadd -c -x -H "$url" -D 'cn=Directory Manager' -w "$DS_DM_PASSWORD" -f /seed/seed.ldif || true
ldapmodify -c -x -H "$url" -D 'cn=Directory Manager' -w "$DS_DM_PASSWORD" -f /seed/acl.ldif || true
ldapsearch -x -H "$url" -D uid=postfix-ldap,ou=system,dc=example,dc=net -w postfix-ldap-secret \
    -b dc=example,dc=net '(mailAlternateAddress=sales@company.com)' mailForwardingAddress | grep -q central@company.com
echo "seeded"
