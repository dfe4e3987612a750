#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <stdint.h>
int main(int argc,char**argv){
  size_t bytes=(size_t)atol(argv[1])<<20; int huge=atoi(argv[2]);
  size_t line=64, n=bytes/4096; // one node per 4K page stride-ish random
  char*buf=mmap(0,bytes,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  if(huge) madvise(buf,bytes,MADV_HUGEPAGE);
  for(size_t i=0;i<bytes;i+=4096) buf[i]=1;
  size_t nodes=bytes/1664; // hnswlib-like element size
  uint32_t*perm=malloc(nodes*4); for(size_t i=0;i<nodes;i++)perm[i]=i;
  srand(1); for(size_t i=nodes-1;i>0;i--){size_t j=((size_t)rand()*RAND_MAX+rand())%(i+1);uint32_t t=perm[i];perm[i]=perm[j];perm[j]=t;}
  for(size_t i=0;i<nodes;i++){ *(size_t*)(buf+(size_t)perm[i]*1664)= (size_t)perm[(i+1)%nodes]*1664;}
  struct timespec a,b; size_t p=0; long steps=5000000;
  clock_gettime(CLOCK_MONOTONIC,&a);
  for(long s=0;s<steps;s++) p=*(size_t*)(buf+p);
  clock_gettime(CLOCK_MONOTONIC,&b);
  printf("%zu MiB huge=%d: %.1f ns/access (p=%zu)\n",bytes>>20,huge,((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/steps,p);
  FILE*f=fopen("/proc/self/smaps_rollup","r"); char l[256]; while(fgets(l,256,f)) if(l[0]=='A'&&l[1]=='n'&&l[4]=='H') fputs(l,stdout);
}
