// Package argocd holds what Argo CD needs to read weft's resources: the
// health check in Lua (health.lua), the argocd-cm keys that install it for
// each kind (argocd-cm.yaml) and the ignoreDifferences entry for the
// injector's caBundle (ignore-differences.yaml). Its test runs the script
// with gopher-lua, the interpreter Argo CD embeds, against statuses that
// weft's controllers wrote.
package argocd
