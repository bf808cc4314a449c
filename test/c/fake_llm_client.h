/* fake_llm_client.h - for the suites that test the model providers: start
 * the fake model server (test/c/helpers/fake_llm.c) on 127.0.0.1, read what
 * it received, make a throwaway CA and server certificate for its TLS mode.
 * The server exits when its stdin closes, so a test that dies leaks none.
 */
#ifndef FAKE_LLM_CLIENT_H
#define FAKE_LLM_CLIENT_H

#include <curl/curl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct fake_llm {
    pid_t pid;
    int to_child;  /* its stdin */
    int port;
    int tls;
    char base[128]; /* http(s)://127.0.0.1:port */
} fake_llm;

/* Start the server with extra arguments (NULL-terminated list). Returns 0,
 * or -1 (the reason on stderr). */
static inline int fake_llm_start(fake_llm *f, const char *helpers, const char *const *args)
{
    char path[512];
    snprintf(path, sizeof path, "%s/fake_llm", helpers);
    int in[2], out[2];
    if (pipe(in) || pipe(out))
        return -1;
    const char *argv[16] = {path, "--port", "0"};
    size_t n = 3;
    f->tls = 0;
    for (size_t i = 0; args && args[i] && n < 15; i++) {
        if (strcmp(args[i], "--tls-cert") == 0)
            f->tls = 1;
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    FILE *r = fdopen(out[0], "r");
    char line[128] = {0};
    if (!r || !fgets(line, sizeof line, r) || sscanf(line, "fake_llm ready port=%d", &f->port) != 1) {
        fprintf(stderr, "fake_llm did not start (%s): %s\n", path, line);
        if (r)
            fclose(r);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(in[1]);
        return -1;
    }
    fclose(r);
    f->pid = pid;
    f->to_child = in[1];
    snprintf(f->base, sizeof f->base, "%s://127.0.0.1:%d", f->tls ? "https" : "http", f->port);
    return 0;
}

static inline void fake_llm_stop(fake_llm *f)
{
    if (f->pid <= 0)
        return;
    close(f->to_child);
    kill(f->pid, SIGTERM);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

static size_t fake_llm_collect(char *p, size_t sz, size_t n, void *arg)
{
    FILE *m = arg;
    return fwrite(p, sz, n, m);
}

/* GET or POST a control path (/_requests, /_reset); the body parsed as JSON
 * (NULL when none). ca_file for a TLS server. */
static inline json_t *fake_llm_control(const fake_llm *f, const char *path, int post,
                                       const char *ca_file)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", f->base, path);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fake_llm_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, m);
    if (post)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
    if (ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, ca_file);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    fclose(m);
    json_t *j = rc == CURLE_OK && len ? json_loadb(buf, len, 0, NULL) : NULL;
    free(buf);
    return j;
}

/* The requests the server got for a model (whose name includes a nonce):
 * a new array reference. */
static inline json_t *fake_llm_requests_for(const fake_llm *f, const char *model,
                                            const char *ca_file)
{
    json_t *all = fake_llm_control(f, "/_requests", 0, ca_file), *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r) {
        const char *m = json_string_value(json_object_get(r, "model"));
        if (m && strcmp(m, model) == 0)
            json_array_append(out, r);
    }
    json_decref(all);
    return out;
}

/* A CA and a certificate for 127.0.0.1 signed by it, in dir (made with the
 * openssl command). 0 or -1. */
static inline int fake_llm_make_certs(const char *dir)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; "
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=council-test-ca "
             "-keyout ca.key -out ca.pem 2>/dev/null; "
             "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 "
             "-keyout server.key -out server.csr 2>/dev/null; "
             "printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > ext.cnf; "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-days 2 -extfile ext.cnf -out server.pem 2>/dev/null",
             dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif
