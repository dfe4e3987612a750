#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
static long rss(){FILE*f=fopen("/proc/self/statm","r");long a,b;fscanf(f,"%ld %ld",&a,&b);fclose(f);return b*4/1024;}
static long ahp(){FILE*f=fopen("/proc/self/smaps_rollup","r");char l[256];long v=0;while(fgets(l,256,f)) if(!strncmp(l,"AnonHugePages:",14)) v=atol(l+14)/1024;fclose(f);return v;}
int main(){
  size_t bytes=1024UL<<20;
  char*buf=mmap(0,bytes,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  memset(buf+4096, 1, bytes/2);   // half populated with 4K pages
  printf("before: rss %ld MiB ahp %ld\n", rss(), ahp());
  struct timespec a,b; clock_gettime(CLOCK_MONOTONIC,&a);
  int r1=madvise(buf,bytes,14 /*HUGEPAGE*/); int r2=madvise(buf,bytes,25 /*COLLAPSE*/);
  clock_gettime(CLOCK_MONOTONIC,&b);
  printf("madvise %d %d; %.3f s; after: rss %ld MiB ahp %ld\n", r1, r2, (b.tv_sec-a.tv_sec)+(b.tv_nsec-a.tv_nsec)/1e9, rss(), ahp());
  memset(buf+bytes/2+4096, 1, 64<<20);
  printf("after touching 64 MiB more: rss %ld ahp %ld\n", rss(), ahp());
}
